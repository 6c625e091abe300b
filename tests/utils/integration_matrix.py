# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs the integration suite on several OpenZFS series, each guest shape of each series as its own job.

A job is one pytest run (``--shape single`` or ``--shape pair``) with its own guests. Jobs run on a few
lanes at once, the full subsets first: TCG guests wait on SSH, Python start-up and txg syncs for about
a third of their time, so two lanes keep both host cores busy. Every line a job prints is shown with
the job's name in front of it and kept in ``.build/integration/<series>-<shape>.log``; a table of what
each job took ends the run. Exits non-zero when any job failed (after letting the others finish).

    python tests/utils/integration_matrix.py [--lanes N] SERIES... [-- PYTEST_ARGS...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

SHAPES = ('single', 'pair')
TESTS = os.path.join(REPO, 'tests', 'integration')
# test files of the single shape that get a guest of their own in full runs, so that the lanes come out even
# (the roles test alone takes about as long as the pair's tests)
SEPARATE = ('test_roles.py',)


@dataclasses.dataclass
class Job:
    series: str
    shape: str
    subset: str
    part: str  # 'all', or one of SEPARATE
    log: str = ''
    seconds: float = 0.0
    rc: int | None = None

    @property
    def name(self) -> str:
        return f'{self.series} {self.shape}' + ('' if self.part == 'all' else f' {self.part}')

    def selection(self) -> list[str]:
        if self.part != 'all':
            return [os.path.join(TESTS, self.part)]
        if self.shape == 'single' and self.subset == 'full':
            return [TESTS, *(f'--ignore={os.path.join(TESTS, name)}' for name in SEPARATE)]
        return [TESTS]


def subset_of(series: str) -> str:
    chosen = os.environ.get('INTEGRATION_SUBSET', 'auto') or 'auto'
    if chosen != 'auto':
        return chosen
    from conftest import FULL_SERIES  # pylint: disable=import-outside-toplevel
    return 'full' if series in FULL_SERIES else 'smoke'


def jobs_for(series_list: list[str], logdir: str) -> list[Job]:
    jobs = []
    for series in series_list:
        subset = subset_of(series)
        for shape in SHAPES:
            jobs.append(Job(series, shape, subset, 'all'))
            if shape == 'single' and subset == 'full':
                jobs += [Job(series, shape, subset, name) for name in SEPARATE]
    for job in jobs:
        job.log = os.path.join(logdir, job.name.replace(' ', '-').replace('.py', '') + '.log')
    # the longest first: full subsets before smoke ones, and a series' single guest (most tests) before the rest
    jobs.sort(key=lambda job: (job.subset != 'full', job.part != 'all', SHAPES.index(job.shape)))
    return jobs


class Runner:
    def __init__(self, pytest_args: list[str]) -> None:
        self.pytest_args = pytest_args
        self.print_lock = threading.Lock()

    def emit(self, job: Job, line: str) -> None:
        with self.print_lock:
            sys.stdout.write(f'[{job.name}] {line}')
            sys.stdout.flush()

    def run(self, job: Job) -> None:
        argv = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', *job.selection(),
                '--shape', job.shape, '-v', '-rs', '--durations=15', *self.pytest_args]
        env = dict(os.environ, ZFS_SERIES=job.series, INTEGRATION_SUBSET=job.subset, PYTHONUNBUFFERED='1')
        started = time.monotonic()
        self.emit(job, f'started ({job.subset} subset): {" ".join(argv[1:])}\n')
        with open(job.log, 'w', encoding='utf-8') as log, \
                subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors='replace') as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                self.emit(job, line)
            rc = proc.wait()
        # pytest's 5: nothing of this shape is in the subset, which is no failure
        job.rc = 0 if rc == 5 else rc
        job.seconds = time.monotonic() - started
        self.emit(job, f'ended with status {job.rc} after {job.seconds:.0f} s\n')


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if '--' in args:
        pytest_args = args[args.index('--') + 1:]
        args = args[:args.index('--')]
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--lanes', type=int, default=2, help='jobs that run at once (default 2)')
    parser.add_argument('series', nargs='+', help='OpenZFS series, e.g. 2.4 2.3 2.1')
    opts = parser.parse_args(args)
    if opts.lanes < 1:
        parser.error('--lanes must be at least 1')
    logdir = os.path.join(REPO, '.build', 'integration')
    os.makedirs(logdir, exist_ok=True)
    jobs = jobs_for(opts.series, logdir)
    runner = Runner(pytest_args)
    pending = list(jobs)
    pending_lock = threading.Lock()

    def lane() -> None:
        while True:
            with pending_lock:
                if not pending:
                    return
                job = pending.pop(0)
            runner.run(job)

    started = time.monotonic()
    threads = [threading.Thread(target=lane, name=f'lane-{n}') for n in range(opts.lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    print(f'\n{"integration job":<28} {"subset":<7} {"seconds":>8}  result')
    for job in jobs:
        result = 'ok' if job.rc == 0 else f'failed (status {job.rc}), log: {os.path.relpath(job.log, REPO)}'
        print(f'{job.name:<28} {job.subset:<7} {job.seconds:8.0f}  {result}')
    print(f'{"wall clock, " + str(opts.lanes) + " lanes":<28} {"":<7} {wall:8.0f}')
    return 0 if all(job.rc == 0 for job in jobs) else 1


if __name__ == '__main__':
    sys.exit(main())
