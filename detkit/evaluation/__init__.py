"""Metrics registered in METRICS."""
from .coco_metric import CocoMetric, classwise_ap, results_to_coco_json

__all__ = ['CocoMetric', 'classwise_ap', 'results_to_coco_json']
