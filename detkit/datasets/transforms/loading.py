"""Transforms that read an image file and turn a data list entry's instances into arrays."""
from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from detkit.errors import InputError
from detkit.registry import TRANSFORMS


class ImageDecodeError(InputError):
    """An image file exists but cannot be decoded (empty, truncated, not an image)."""


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _jpeg_is_complete(data: np.ndarray) -> bool:
    """Whether a JPEG byte stream has an end-of-image marker after its last start-of-scan.

    Some OpenCV builds decode a truncated JPEG into a grey-padded image instead of failing;
    this check catches that. ``0xFF`` inside entropy-coded data is always followed by ``0x00``
    or a restart marker, so ``FF D9`` after the last ``FF DA`` is the real end of the image.
    """
    raw = data.tobytes()
    last_scan = raw.rfind(b'\xff\xda')
    return last_scan >= 0 and raw.find(b'\xff\xd9', last_scan) >= 0


def _png_is_complete(data: np.ndarray) -> bool:
    """Whether a PNG byte stream's chunks run whole from the signature to an ``IEND`` chunk.

    Walks the chunk lengths (no CRC check): a file cut anywhere ends inside a chunk or before
    ``IEND``. Some libpng builds return the rows decoded so far (the rest grey or black) for
    such a file; OpenCV 5 rejects it, but with a libpng error on stderr first.
    """
    raw = data.data  # the array's buffer as a memoryview, no copy
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 4], 'big')
        chunk_type = bytes(raw[pos + 4:pos + 8])
        pos += 12 + length  # length, type, data, CRC
        if pos > len(raw):
            return False
        if chunk_type == b'IEND':
            return True
    return False


def decode_image(path: str) -> np.ndarray:
    """Read an image file as a viewer shows it, as 3-channel ``uint8`` BGR.

    What each kind of file becomes (``tests/test_bad_inputs.py`` checks every row):

    ======================================  ===============================================
    file                                    result
    ======================================  ===============================================
    colour JPEG/PNG/BMP/WebP/TIFF/GIF       its pixels, BGR
    EXIF orientation 2-8 (JPEG, PNG, WebP)  rotated/mirrored as a viewer shows it
    CMYK JPEG (Adobe)                       converted to BGR (pure red -> ~(1, 1, 255))
    grey, grey + alpha, 1-bit               the grey value in all 3 channels
    palette PNG (with or without tRNS)      the palette colours
    RGBA                                    alpha dropped: the stored colour of each pixel,
                                            even where it is transparent (as mmdet and every
                                            OpenCV pipeline read it)
    16-bit (grey, RGB, RGBA)                ``round(v * 255 / 65535)``
    1 x 1, 4000 x 20, ...                   read as is (any size OpenCV decodes)
    missing file                            ``FileNotFoundError`` naming it
    0 bytes                                 ``ImageDecodeError``: "is empty (0 bytes)"
    JPEG with no end marker after its last  ``ImageDecodeError``: "is a truncated JPEG"
    scan (cut short)
    PNG whose chunks stop before ``IEND``   ``ImageDecodeError``: "is a truncated PNG"
    any other undecodable file (text named  ``ImageDecodeError``: "cannot be decoded"
    ``.jpg``, a truncated BMP/WebP/TIFF)
    float pixels (e.g. a float32 TIFF)      ``ImageDecodeError`` naming the dtype
    ======================================  ===============================================

    Every error message names ``path``. ``np.fromfile`` + ``cv2.imdecode`` reads non-ASCII
    paths.

    Args:
        path: the image file.

    Returns:
        ``(H, W, 3)`` ``uint8`` BGR array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageDecodeError: the file is empty, truncated or not a supported image.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image file {path!r} does not exist')
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError(f'image file {path!r} is empty (0 bytes)')
    if data[:2].tobytes() == b'\xff\xd8' and not _jpeg_is_complete(data):
        raise ImageDecodeError(f'image file {path!r} is a truncated JPEG (no end-of-image '
                               'marker after its last scan)')
    if data[:8].tobytes() == _PNG_SIGNATURE and not _png_is_complete(data):
        raise ImageDecodeError(f'image file {path!r} is a truncated PNG ({data.size} bytes; '
                               'its chunks end before the IEND chunk)')
    # IMREAD_COLOR: 3 channels + EXIF orientation; IMREAD_ANYDEPTH keeps 16 bits for our own
    # rounding (OpenCV alone would drop the low byte).
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageDecodeError(f'image file {path!r} ({data.size} bytes) cannot be decoded: it '
                               'is truncated, corrupt or not an image format OpenCV reads')
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f'image file {path!r} has {img.dtype} pixels; detkit reads 8- '
                               'and 16-bit images only')
    return img


@TRANSFORMS.register_module()
class LoadImageFromFile:
    """Read ``results['img_path']`` into ``results['img']`` (3-channel BGR, EXIF applied).

    Sets ``img`` ``(H, W, 3)``, ``ori_shape = img_shape = (H, W)``, ``scale_factor = (1.0,
    1.0)`` and ``flip = False``. When ``results`` carries the annotation's ``height`` and
    ``width``, they must equal the decoded size, since the boxes are in those pixels.

    Args:
        to_float32: return ``float32`` pixels instead of ``uint8``.
    """

    def __init__(self, to_float32: bool = False) -> None:
        self.to_float32 = to_float32

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        """Load the image.

        Args:
            results: a data list entry with ``img_path`` (and optionally ``height``/``width``).

        Returns:
            ``results`` with ``img``, ``ori_shape``, ``img_shape``, ``scale_factor`` and ``flip``.

        Raises:
            FileNotFoundError: the file does not exist.
            ImageDecodeError: (a ``ValueError``) the file cannot be decoded.
            ValueError: the decoded size differs from the annotated ``height``/``width``.
        """
        path = results['img_path']
        img = decode_image(path)
        height, width = img.shape[:2]
        if 'height' in results and 'width' in results:
            annotated = (int(results['height']), int(results['width']))
            if annotated != (height, width):
                hint = (' (the sizes are transposed: the file has an EXIF orientation that the '
                        'annotation did not take into account, or vice versa)'
                        if annotated == (width, height) else '')
                raise ValueError(f'image file {path!r} decodes to height x width = {height} x '
                                 f'{width} but its annotation says {annotated[0]} x '
                                 f'{annotated[1]}; its boxes would be wrong{hint}')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['ori_shape'] = (height, width)
        results['img_shape'] = (height, width)
        results['scale_factor'] = (1.0, 1.0)
        results['flip'] = False
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(to_float32={self.to_float32})'


@TRANSFORMS.register_module()
class LoadAnnotations:
    """Turn ``results['instances']`` into box and label arrays.

    Sets ``gt_bboxes`` ``(N, 4)`` float32 and ``gt_labels`` ``(N,)`` int64 for the instances with
    ``ignore_flag == 0``, and ``gt_ignore_bboxes`` ``(M, 4)`` float32 for those with
    ``ignore_flag == 1`` (COCO crowd regions). Boxes are xyxy pixels of the original image.

    Args:
        with_bbox: set ``gt_bboxes`` and ``gt_ignore_bboxes``.
        with_label: set ``gt_labels``.
    """

    def __init__(self, with_bbox: bool = True, with_label: bool = True) -> None:
        self.with_bbox = with_bbox
        self.with_label = with_label

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        """Convert the instances.

        Args:
            results: a dict with ``instances``: ``[dict(bbox=[x1, y1, x2, y2], bbox_label=int,
                ignore_flag=0|1)]``.

        Returns:
            ``results`` with ``gt_bboxes``, ``gt_labels`` and ``gt_ignore_bboxes``.
        """
        if 'instances' not in results:
            raise KeyError(f"LoadAnnotations needs results['instances'] (from the data set), "
                           f"got keys {sorted(results)} for {results.get('img_path', '?')!r}")
        kept = [i for i in results['instances'] if not i.get('ignore_flag', 0)]
        ignored = [i for i in results['instances'] if i.get('ignore_flag', 0)]
        if self.with_bbox:
            results['gt_bboxes'] = _boxes_array(kept, results)
            results['gt_ignore_bboxes'] = _boxes_array(ignored, results)
        if self.with_label:
            results['gt_labels'] = np.array([i['bbox_label'] for i in kept],
                                            dtype=np.int64).reshape(-1)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(with_bbox={self.with_bbox}, with_label={self.with_label})'


def _boxes_array(instances: list[dict[str, Any]], results: dict[str, Any]) -> np.ndarray:
    """The ``bbox`` of each instance as an ``(N, 4)`` float32 array (``(0, 4)`` when empty)."""
    if not instances:
        return np.zeros((0, 4), dtype=np.float32)
    try:
        boxes = np.array([i['bbox'] for i in instances], dtype=np.float32)
    except (TypeError, ValueError):  # ragged or non-numeric
        boxes = np.zeros((0,), dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"LoadAnnotations: every instance 'bbox' must be [x1, y1, x2, y2], got "
                         f"{[i['bbox'] for i in instances]} for "
                         f"{results.get('img_path', '?')!r}")
    return boxes
