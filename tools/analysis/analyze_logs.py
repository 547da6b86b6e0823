"""Plot and summarise the scalar logs that training writes (``work_dir/<time>/vis_data/*.json``).

    python tools/analysis/analyze_logs.py plot LOG.json [LOG2.json ...] --keys loss bbox_mAP \
        --out curve.png [--title TEXT] [--labels NAME [NAME2 ...]]
    python tools/analysis/analyze_logs.py summary LOG.json [...]

Each log line is a JSON dict. Training lines have ``iter`` and ``epoch``; validation lines have
``coco/...`` metrics and ``step`` = the epoch. A key matches a logged name exactly or as its last
part (``bbox_mAP`` matches ``coco/bbox_mAP``). Training values are plotted against the
iteration, validation values at the last iteration of their epoch, so both share one x axis.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import statistics
import sys
from dataclasses import dataclass, field


@dataclass
class ScalarLog:
    """The parsed lines of one log: training points and validation points.

    Attributes:
        path: the file.
        train: per logged name, ``(iteration, value)`` pairs.
        val: per logged name, ``(epoch, value)`` pairs.
        epoch_end: the last logged training iteration of every epoch.
        iter_times: the ``time`` (seconds per iteration) of every training line.
    """

    path: str
    train: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    val: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    epoch_end: dict[int, int] = field(default_factory=dict)
    iter_times: list[float] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(set(self.train) | set(self.val))


def load_log(path: str) -> ScalarLog:
    """Parse a ``vis_data`` JSON-lines log.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not a JSON object (the error names the line number).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'analyze_logs: log {path!r} does not exist (training writes '
                                'work_dir/<timestamp>/vis_data/<timestamp>.json)')
    log = ScalarLog(path)
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f'analyze_logs: {path}:{number} is not JSON ({error.msg})') \
                    from None
            if not isinstance(record, dict):
                raise ValueError(f'analyze_logs: {path}:{number} is not a JSON object')
            if 'iter' in record:
                step = int(record['iter'])
                if 'epoch' in record:
                    epoch = int(record['epoch'])
                    log.epoch_end[epoch] = max(step, log.epoch_end.get(epoch, 0))
                if isinstance(record.get('time'), (int, float)):
                    log.iter_times.append(float(record['time']))
                target = log.train
            else:
                step = int(record.get('step', 0))
                target = log.val
            for name, value in record.items():
                if name in ('iter', 'epoch', 'step') or not isinstance(value, (int, float)):
                    continue
                target.setdefault(name, []).append((step, float(value)))
    return log


def resolve_key(log: ScalarLog, key: str) -> tuple[str, str] | None:
    """``(kind, logged name)`` for a key (exact or last-part match), ``None`` if absent."""
    for kind, table in (('train', log.train), ('val', log.val)):
        if key in table:
            return kind, key
    for kind, table in (('val', log.val), ('train', log.train)):
        matches = [name for name in table if name.split('/')[-1] == key]
        if matches:
            return kind, matches[0]
    return None


def series(log: ScalarLog, key: str) -> tuple[list[int], list[float], str]:
    """The x (iteration) and y values of ``key`` in ``log`` and the logged name.

    Raises:
        KeyError: the key is not in the log; the message lists the names that are.
    """
    found = resolve_key(log, key)
    if found is None:
        raise KeyError(f'analyze_logs: key {key!r} is not in {log.path}; it has '
                       f'{", ".join(log.names())}')
    kind, name = found
    points = log.train[name] if kind == 'train' else log.val[name]
    if kind == 'val':  # epoch -> the last training iteration of that epoch
        points = [(log.epoch_end.get(epoch, epoch), value) for epoch, value in points]
    return [p[0] for p in points], [p[1] for p in points], name


def plot(logs: list[ScalarLog], keys: list[str], out: str, title: str | None = None,
         labels: list[str] | None = None) -> None:
    """One subplot per key, one line per log; saved to ``out`` (the format from its suffix).

    ``labels`` names the logs in the legends, one per log (default: the log files' names).

    Raises:
        ValueError: ``labels`` does not give one name per log.
    """
    if labels is not None and len(labels) != len(logs):
        raise ValueError(f'analyze_logs: {len(labels)} --labels for {len(logs)} logs; give one '
                         'name per log, in the same order')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3 * len(keys)), squeeze=False,
                             sharex=True)
    for axis, key in zip(axes[:, 0], keys):
        for index, log in enumerate(logs):
            xs, ys, name = series(log, key)
            if labels is not None:
                label = labels[index]
            else:
                label = osp.basename(log.path) if len(logs) > 1 else name
            axis.plot(xs, ys, marker='o' if len(xs) < 20 else None, label=label)
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
        axis.legend(loc='best', fontsize='small')
    axes[-1, 0].set_xlabel('iteration')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def summary(log: ScalarLog) -> str:
    """Iterations, mean/median seconds per iteration and the last value of every metric."""
    lines = [log.path]
    if log.iter_times:
        times = log.iter_times[1:] or log.iter_times  # the first window includes warm-up
        last_iter = max(log.epoch_end.values()) if log.epoch_end else 0
        lines.append(f'  {last_iter} iterations, {len(log.epoch_end)} epochs; seconds/iteration '
                     f'mean {statistics.mean(times):.3f}, median {statistics.median(times):.3f}'
                     f', slowest window {max(times):.3f}')
    for name in sorted(n for n in log.val if n not in ('time', 'data_time')):
        epoch, value = log.val[name][-1]
        best = max(v for _, v in log.val[name])
        lines.append(f'  {name}: last {value:.4f} (epoch {epoch}), best {best:.4f}')
    if 'loss' in log.train:
        first, last = log.train['loss'][0][1], log.train['loss'][-1][1]
        lines.append(f'  loss: first {first:.4f}, last {last:.4f}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)
    plot_parser = commands.add_parser('plot', help='plot keys against the iteration')
    plot_parser.add_argument('logs', nargs='+', help='vis_data JSON logs')
    plot_parser.add_argument('--keys', nargs='+', default=['loss'], help='what to plot')
    plot_parser.add_argument('--out', required=True, help='image file, e.g. curve.png')
    plot_parser.add_argument('--title', help='figure title')
    plot_parser.add_argument('--labels', nargs='+', help='legend names, one per log')
    summary_parser = commands.add_parser('summary', help='iteration time and final metrics')
    summary_parser.add_argument('logs', nargs='+', help='vis_data JSON logs')
    args = parser.parse_args(argv)
    try:
        logs = [load_log(path) for path in args.logs]
        if args.command == 'plot':
            plot(logs, args.keys, args.out, args.title, args.labels)
            print(f'wrote {args.out}')
        else:
            print('\n'.join(summary(log) for log in logs))
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(error.args[0])


if __name__ == '__main__':
    main()
