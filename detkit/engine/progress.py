"""Progress people expect: training lines every few seconds, and a progress bar with ETA.

* :class:`LoggerHook`: mmengine's logger hook that also logs a training line (iteration, loss,
  seconds per iteration, ETA of the run) whenever ``interval_s`` seconds have passed since the
  last one, however slow an iteration is. The scalars (``vis_data/scalars.json``) are still
  written every ``interval`` iterations only, so the curves keep a regular step.
* :class:`ProgressBar`: on a terminal, one line redrawn in place (``[####....] 12/40 images
  3.10 images/s ETA 0:00:09``); in a file or a CI log, a plain line every ``interval_s`` seconds
  and one at the end, so that logs stay readable.
* :class:`InferenceProgressHook`: a :class:`ProgressBar` over the images of ``tools/test.py``.
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import IO, Any, Callable

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.hooks import LoggerHook as MMEngineLoggerHook

from detkit.registry import HOOKS


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` of a duration (``0:00:09``)."""
    return str(datetime.timedelta(seconds=int(round(max(seconds, 0.0)))))


class ProgressBar:
    """Progress over ``total`` items (or an unknown number), with rate and ETA.

    Args:
        total: the number of items, or None when unknown (no percentage, no ETA).
        unit: what an item is, for the text (``'images'``, ``'frames'``).
        stream: where to write (default ``sys.stderr``).
        interval_s: in plain mode (``stream`` is not a terminal), seconds between lines.
        width: characters of the bar on a terminal.
        clock: seconds as a float (a parameter for tests).
    """

    def __init__(self, total: int | None, unit: str = 'images', stream: IO[str] | None = None,
                 interval_s: float = 10.0, width: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total if total and total > 0 else None
        self.unit, self.width, self.interval_s, self.clock = unit, width, interval_s, clock
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, 'isatty', None)
        self.terminal = bool(isatty and isatty())
        self.done = 0
        self.start = clock()
        self.last_line = self.start
        self.closed = False

    def text(self) -> str:
        """The progress as text: count, share, rate and ETA."""
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        count = f'{self.done}/{self.total}' if self.total else f'{self.done}'
        parts = [f'{count} {self.unit}']
        if self.total:
            parts[0] += f' ({100 * self.done / self.total:.0f}%)'
        parts.append(f'{rate:.2f} {self.unit}/s')
        if self.total and self.done < self.total and rate > 0:
            parts.append(f'ETA {format_seconds((self.total - self.done) / rate)}')
        else:
            parts.append(f'elapsed {format_seconds(elapsed)}')
        return ', '.join(parts)

    def _bar(self) -> str:
        if not self.total:
            return self.text()
        filled = min(self.width, int(self.width * self.done / self.total))
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {self.text()}"

    def update(self, count: int = 1) -> None:
        """``count`` more items are done."""
        self.done += count
        finished = self.total is not None and self.done >= self.total
        if self.terminal:
            self.stream.write('\r\033[K' + self._bar() + ('\n' if finished else ''))
            self.stream.flush()
        elif finished or self.clock() - self.last_line >= self.interval_s:
            self.stream.write(self.text() + '\n')
            self.stream.flush()
            self.last_line = self.clock()
        if finished:
            self.closed = True

    def write(self, line: str) -> None:
        """Print ``line`` (to stdout) without breaking the bar: on a terminal the bar is
        cleared first and drawn again below the line."""
        if self.terminal and not self.closed:
            self.stream.write('\r\033[K')
            self.stream.flush()
        print(line, flush=True)
        if self.terminal and not self.closed and self.done:
            self.stream.write(self._bar())
            self.stream.flush()

    def close(self) -> None:
        """End the bar: a final line (plain mode: unless the last update already wrote it)."""
        if self.closed:
            return
        self.closed = True
        if self.terminal:
            self.stream.write('\r\033[K' + self._bar() + '\n')
        else:
            self.stream.write(self.text() + '\n')
        self.stream.flush()


@HOOKS.register_module()
class LoggerHook(MMEngineLoggerHook):
    """mmengine's ``LoggerHook`` that also logs a training line every ``interval_s`` seconds.

    Args:
        interval_s: seconds after which a training line is logged even if ``interval``
            iterations have not passed (0 or None: only every ``interval`` iterations).
        **kwargs: :class:`mmengine.hooks.LoggerHook`'s arguments (``interval``, ...).
    """

    def __init__(self, interval_s: float | None = 5.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if interval_s is not None and interval_s < 0:
            raise ValueError(f'LoggerHook: interval_s must be >= 0 or None, got {interval_s}')
        self.interval_s = interval_s or None
        self._last_line = time.monotonic()

    def before_train(self, runner: Any) -> None:
        self._last_line = time.monotonic()

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        # the condition under which mmengine's hook logs (and writes the scalars)
        regular = self.every_n_inner_iters(batch_idx, self.interval) or (
            self.end_of_epoch(runner.train_dataloader, batch_idx)
            and (not self.ignore_last or len(runner.train_dataloader) <= self.interval))
        if regular or self.interval_s is None:
            super().after_train_iter(runner, batch_idx, data_batch, outputs)
            if regular:
                self._last_line = time.monotonic()
            return
        if time.monotonic() - self._last_line >= self.interval_s:
            _, line = runner.log_processor.get_log_after_iter(runner, batch_idx, 'train')
            runner.logger.info(line)  # a line only: the scalars keep their regular step
            self._last_line = time.monotonic()


@HOOKS.register_module()
class InferenceProgressHook(Hook):
    """A :class:`ProgressBar` over the test images (this process's share), on the main process.

    Args:
        interval_s: seconds between plain lines when the output is not a terminal.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.bar: ProgressBar | None = None

    def before_test_epoch(self, runner: Any) -> None:
        if not is_main_process():
            return
        loader = runner.test_dataloader
        sampler = getattr(loader, 'sampler', None)
        try:
            total: int | None = len(sampler) if sampler is not None else len(loader.dataset)
        except TypeError:
            total = None
        self.bar = ProgressBar(total, 'images', interval_s=self.interval_s)

    def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                        outputs: Any = None) -> None:
        if self.bar is not None:
            self.bar.update(len(outputs) if outputs is not None else 1)

    def after_test_epoch(self, runner: Any, metrics: Any = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
