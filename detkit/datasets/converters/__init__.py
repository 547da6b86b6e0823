"""Annotation formats people label in, as COCO JSON: YOLO (Ultralytics) and LabelMe."""
from .labelme import LabelMeFormatError, labelme_to_coco, read_class_file
from .yolo import (
    ConversionLog,
    YoloDataset,
    YoloFormatError,
    label_file,
    parse_label_line,
    read_data_yaml,
    split_to_coco,
)

__all__ = ['ConversionLog', 'LabelMeFormatError', 'YoloDataset', 'YoloFormatError',
           'label_file', 'labelme_to_coco', 'parse_label_line', 'read_class_file',
           'read_data_yaml', 'split_to_coco']
