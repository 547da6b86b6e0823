"""Progress output: plain lines for files and CI logs, a redrawn bar on a terminal, and training
lines every few seconds however slow an iteration is."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from detkit.engine import progress as progress_module
from detkit.engine.progress import InferenceProgressHook, LoggerHook, ProgressBar, format_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_seconds():
    assert format_seconds(9.4) == '0:00:09'
    assert format_seconds(3725) == '1:02:05'
    assert format_seconds(-3) == '0:00:00'


def test_plain_lines_every_interval_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(10, 'images', stream=out, interval_s=10.0, clock=clock)
    for step in range(10):
        clock.now += 4.0  # 0.25 images/s
        bar.update(1)
    lines = out.getvalue().splitlines()
    # lines after 12 s (3 images), 24 s (6), 36 s (9) and at the end (10)
    assert lines == ['3/10 images (30%), 0.25 images/s, ETA 0:00:28',
                     '6/10 images (60%), 0.25 images/s, ETA 0:00:16',
                     '9/10 images (90%), 0.25 images/s, ETA 0:00:04',
                     '10/10 images (100%), 0.25 images/s, elapsed 0:00:40']
    assert '\r' not in out.getvalue()
    bar.close()  # the end was written already
    assert len(out.getvalue().splitlines()) == 4


def test_terminal_bar_is_redrawn_in_place():
    clock, out = FakeClock(), Terminal()
    bar = ProgressBar(4, 'frames', stream=out, width=8, clock=clock)
    clock.now += 2.0
    bar.update(2)
    assert out.getvalue() == '\r\033[K[####....] 2/4 frames (50%), 1.00 frames/s, ETA 0:00:02'
    clock.now += 2.0
    bar.update(2)
    assert out.getvalue().endswith(
        '\r\033[K[########] 4/4 frames (100%), 1.00 frames/s, elapsed 0:00:04\n')


def test_unknown_total_and_close():
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(None, 'frames', stream=out, interval_s=1e9, clock=clock)
    clock.now += 5.0
    bar.update(10)
    assert out.getvalue() == ''
    bar.close()
    assert out.getvalue() == '10 frames, 2.00 frames/s, elapsed 0:00:05\n'


def test_write_keeps_the_bar_below_the_line(capsys):
    clock, out = FakeClock(), Terminal()
    bar = ProgressBar(3, stream=out, width=3, clock=clock)
    clock.now += 1.0
    bar.update(1)
    bar.write('a.png: 2 detections')
    assert capsys.readouterr().out == 'a.png: 2 detections\n'
    assert out.getvalue().endswith('\r\033[K[#..] 1/3 images (33%), 1.00 images/s, ETA 0:00:02')


def fake_runner(num_batches: int, logged: list, scalars: list):
    processor = SimpleNamespace(
        get_log_after_iter=lambda runner, batch_idx, mode: ('tag', f'iter {batch_idx + 1}'))
    return SimpleNamespace(
        train_dataloader=[None] * num_batches, iter=0, experiment_name='exp',
        log_processor=processor,
        logger=SimpleNamespace(info=logged.append),
        visualizer=SimpleNamespace(add_scalars=lambda tag, step, file_path: scalars.append(step)))


def test_logger_hook_logs_every_few_seconds_and_keeps_scalars_regular(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, 'monotonic', clock)
    logged, scalars = [], []
    runner = fake_runner(60, logged, scalars)
    hook = LoggerHook(interval=50, interval_s=5.0)
    hook.json_log_path = 'scalars.json'
    hook.before_train(runner)
    for batch_idx in range(60):
        clock.now += 2.0  # a slow iteration: 2 s
        runner.iter = batch_idx
        hook.after_train_iter(runner, batch_idx)
    lines = [line for line in logged if line.startswith('iter')]
    # every 3rd iteration (6 s >= 5 s since the last line), the regular 50th, then every 3rd
    # again: mmengine's rule alone would skip iterations 51-60 (ignore_last)
    expected = [f'iter {i}' for i in range(3, 50, 3)] + ['iter 50', 'iter 53', 'iter 56',
                                                          'iter 59']
    assert lines == expected
    assert scalars == [50]  # the curves keep their 50-iteration step


def test_logger_hook_without_interval_s_is_mmengines(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, 'monotonic', clock)
    logged, scalars = [], []
    runner = fake_runner(20, logged, scalars)
    hook = LoggerHook(interval=5, interval_s=None)
    hook.json_log_path = 'scalars.json'
    for batch_idx in range(20):
        clock.now += 100.0
        runner.iter = batch_idx
        hook.after_train_iter(runner, batch_idx)
    assert [line for line in logged if line.startswith('iter')] == [
        'iter 5', 'iter 10', 'iter 15', 'iter 20']
    assert scalars == [5, 10, 15, 20]
    with pytest.raises(ValueError, match='interval_s must be >= 0'):
        LoggerHook(interval_s=-1)


def test_test_progress_hook_counts_images(monkeypatch, capsys):
    runner = SimpleNamespace(test_dataloader=SimpleNamespace(sampler=range(7), dataset=None))
    hook = InferenceProgressHook(interval_s=1e9)
    hook.before_test_epoch(runner)
    assert hook.bar is not None and hook.bar.total == 7
    for batch in ([1, 2, 3], [4, 5, 6], [7]):
        hook.after_test_iter(runner, 0, outputs=batch)
    assert hook.bar.done == 7
    hook.after_test_epoch(runner)
    assert hook.bar is None
    assert capsys.readouterr().err.startswith('7/7 images (100%)')
