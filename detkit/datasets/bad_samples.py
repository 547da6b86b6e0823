"""What a data set does with a sample whose image cannot be read: fail, or skip it in training.

A sample is *bad* when loading its image raises one of ``UNREADABLE_IMAGE_ERRORS``: the file
does not exist (``FileNotFoundError``) or cannot be decoded (``ImageDecodeError``: empty,
truncated, not an image; see :func:`~detkit.datasets.transforms.decode_image`). Other errors
(an annotated size that differs from the decoded one, a bug in a transform) always propagate:
they point at the annotation or the code, not at one broken file.

==========================  ==================================================================
``bad_sample``              a bad sample
==========================  ==================================================================
``'error'`` (the default)   raises the same error type, naming the file and the sample index
                            and saying how to switch to ``'skip'``
``'skip'``, training        warned once per file (``BadSampleWarning``), its path added to
                            ``dataset.skipped_files``; ``prepare_data`` returns ``None``, so
                            mmengine's ``BaseDataset.__getitem__`` draws another random sample
                            (up to ``max_refetch`` times). A file already skipped is not read
                            again. Once every sample of the data set has been skipped,
                            ``ImageDecodeError`` says so (rather than mmengine's generic
                            "Cannot find valid image" after ``max_refetch`` tries).
``'skip'``, ``test_mode``   raises, as ``'error'``: every image of an evaluation set is scored,
                            and one that silently vanished would change the metric. Fix the
                            file or remove it from the annotation file.
==========================  ==================================================================

With ``num_workers > 0`` every DataLoader worker holds its own copy of the data set: a bad file
is then warned once per worker, and ``skipped_files`` of the main process's data set lists only
what the main process itself loaded (the warnings, which name each file, are the record).

A data set adopts it by deriving from :class:`~detkit.datasets.base_det_dataset.BaseDetDataset`
(as :class:`~detkit.datasets.CocoDataset`, :class:`~detkit.datasets.CCTSDBDataset` and
:class:`~detkit.datasets.VOCDataset` do), which holds a :class:`BadSampleHandler` as
``self.bad_samples``, routes ``prepare_data`` through it and exposes ``skipped_files``.

:class:`~detkit.datasets.JointDataset` runs its own pipeline on its sub-data sets' data infos,
so their ``bad_sample`` does not apply inside it (it does not use this handler yet).

A data set that reads images while loading its annotations (CCTSDB reads each image's size)
passes the error of an unreadable image to :meth:`BadSampleHandler.unreadable` with
``test_mode``: it raises, or records the file so that the caller leaves the image out.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

from detkit.errors import InputError

from .transforms.loading import ImageDecodeError

BAD_SAMPLE_CHOICES = ('error', 'skip')

# The errors that mark one sample's image as unreadable; anything else always propagates.
UNREADABLE_IMAGE_ERRORS = (ImageDecodeError, FileNotFoundError)


class BadSampleWarning(UserWarning):
    """A sample was skipped because its image cannot be read (``bad_sample='skip'``)."""


class BadSampleHandler:
    """Raise on, or skip and record, samples whose image cannot be read.

    See the module docstring for the policy and how a data set uses it.

    Args:
        bad_sample: ``'error'`` (raise) or ``'skip'`` (training only: warn once per file, count,
            let mmengine draw another sample).
        owner: the data set's name, for messages (e.g. ``'CocoDataset'``).

    Attributes:
        policy: ``bad_sample``.
        num_skips: how many times a bad sample was skipped, repeats of a file included.

    Example:
        >>> handler = BadSampleHandler('skip', owner='CocoDataset')
        >>> handler.skipped_files
        []
    """

    def __init__(self, bad_sample: str = 'error', owner: str = 'dataset') -> None:
        if bad_sample not in BAD_SAMPLE_CHOICES:
            raise InputError(f'{owner}: bad_sample={bad_sample!r}; expected one of '
                             f'{list(BAD_SAMPLE_CHOICES)}')
        self.policy = bad_sample
        self.owner = owner
        self.num_skips = 0
        self._skipped: dict[str, str] = {}  # path -> the error message, in first-skip order
        self._bad_in_pipeline: set[str] = set()  # the skipped paths that are in the data set

    @property
    def skipped_files(self) -> list[str]:
        """The distinct image paths skipped so far, in the order they were first skipped."""
        return list(self._skipped)

    def prepare(self, dataset: Any, idx: int, prepare: Callable[[int], Any]) -> Any:
        """Run ``prepare(idx)``; on an unreadable image raise or return ``None`` (skip).

        Args:
            dataset: the data set (for ``test_mode``, ``len`` and ``get_data_info(idx)``, whose
                ``img_path`` names the file).
            idx: the sample index.
            prepare: the data set's own ``prepare_data`` (e.g. ``super().prepare_data``).

        Returns:
            What ``prepare`` returns, or ``None`` for a skipped sample.

        Raises:
            FileNotFoundError, ImageDecodeError: the image cannot be read and the policy is
                ``'error'`` or the data set is in ``test_mode``; or every sample is bad.
        """
        skipping = self.policy == 'skip' and not dataset.test_mode
        if skipping and self._skipped:
            if _img_path(dataset, idx) in self._skipped:  # known bad: do not read it again
                self.num_skips += 1
                return None
        try:
            return prepare(idx)
        except UNREADABLE_IMAGE_ERRORS as err:
            path = _img_path(dataset, idx)
            self.unreadable(path, err, test_mode=dataset.test_mode, where=f'sample {idx}')
        self.num_skips += 1
        self._bad_in_pipeline.add(path)
        if len(self._bad_in_pipeline) >= len(dataset):
            raise ImageDecodeError(f'{self.owner}: none of the {len(dataset)} images can be read '
                                   f"(bad_sample='skip' skipped all of them, e.g. "
                                   f'{self.skipped_files[0]!r}); check data_root and data_prefix')
        return None

    def unreadable(self, path: str, err: Exception, test_mode: bool, where: str = '') -> None:
        """Handle one unreadable image: raise (``'error'``, ``test_mode``) or record and warn.

        Args:
            path: the image file.
            err: the error reading it raised (``FileNotFoundError`` or ``ImageDecodeError``).
            test_mode: whether the data set evaluates (then this always raises).
            where: what refers to the image, for the message (``'sample 3'``, ``'file:line'``).

        Raises:
            FileNotFoundError, ImageDecodeError: the type of ``err``, with the file, ``where``
                and what to do in the message, unless the image is recorded as skipped.
        """
        reason = str(err) if path in str(err) else f'{path!r}: {err}'
        if self.policy == 'error' or test_mode:
            if self.policy == 'error':
                advice = ("to skip such samples in training (each file warned once and listed in "
                          "dataset.skipped_files), set bad_sample='skip' on the data set, e.g. "
                          '--cfg-options train_dataloader.dataset.bad_sample=skip')
            else:
                advice = ("bad_sample='skip' applies in training only: in test_mode every image "
                          'is evaluated, so fix the file or remove it from the annotations')
            context = f' ({where})' if where else ''
            error_type = ImageDecodeError if isinstance(err, ImageDecodeError) else \
                FileNotFoundError
            raise error_type(f'{self.owner}: {reason}{context}; {advice}') from err
        if path not in self._skipped:
            self._skipped[path] = reason
            warnings.warn(f"{self.owner}: skipping a sample (bad_sample='skip'; each file is "
                          f'warned once, {len(self._skipped)} skipped so far): {reason}',
                          BadSampleWarning, stacklevel=3)


def _img_path(dataset: Any, idx: int) -> str:
    """``img_path`` of sample ``idx`` (``'sample idx'`` when the data info has none)."""
    return str(dataset.get_data_info(idx).get('img_path', f'sample {idx}'))
