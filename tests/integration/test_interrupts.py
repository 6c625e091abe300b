# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The command line engine stopped half way through a push: by SIGTERM (a job cancel, ``systemctl
stop``) it reports and exits 143 with nothing left running; by SIGKILL its ssh processes die with it.
Either way the next run resumes the stream and the replica matches the source by guid."""

from __future__ import annotations

import glob
import json
import os
import shlex
import time

import pytest

from test_replicate import GUEST, checksums, receive_progress, seed, snap_guids, target_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the engine installed the way the client role installs it: module_utils as the package pyzfsautosnap
ENGINE_DIR = '/root/interrupts-engine'
RUNDIR = '/root/interrupts-run'
# our ssh processes start with this option set (see _transport_openssh.base_options)
LEFTOVERS = r'''
for p in $(ls /proc | grep -E '^[0-9]+$'); do
  cmd=$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null) || continue
  case "$cmd" in
    "ssh -T -x -a "*|"zfs send "*|"zfs receive "*|"mbuffer "*) echo "$p $cmd";;
  esac
done
'''


@pytest.fixture(scope='module')
def engine(bed) -> str:
    bed.ssh(GUEST, ['mkdir', '-p', f'{ENGINE_DIR}/pyzfsautosnap', RUNDIR])
    for path in sorted(glob.glob(os.path.join(REPO, 'plugins', 'module_utils', '*.py'))):
        with open(path, encoding='utf-8') as fh:
            bed.ssh(GUEST, ['sh', '-c', 'cat > "$1"', 'sh', f'{ENGINE_DIR}/pyzfsautosnap/{os.path.basename(path)}'],
                    input_text=fh.read())
    return ENGINE_DIR


def cli_argv(dataset: str, *extra: str) -> list[str]:
    return ['python3', '-m', 'pyzfsautosnap._cli', 'replicate', f'{dataset}/data', '--target-root', target_root(dataset),
            '--target-host', 'localhost', '--transport', 'openssh', *extra]


def start_cli(bed, argv: list[str]) -> int:
    """Start the engine in the background in the guest; its pid (the python process itself)."""
    inner = (f'cd {ENGINE_DIR} && {shlex.join(argv)} >{RUNDIR}/out.json 2>{RUNDIR}/err.txt </dev/null & '
             f'echo $! >{RUNDIR}/pid; wait $!; echo $? >{RUNDIR}/rc')
    bed.sh(GUEST, f'rm -f {RUNDIR}/pid {RUNDIR}/rc {RUNDIR}/out.json {RUNDIR}/err.txt; '
                  f'setsid sh -c {shlex.quote(inner)} >/dev/null 2>&1 </dev/null &')
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = bed.ssh(GUEST, ['cat', f'{RUNDIR}/pid'], check=False).stdout.strip()
        if out:
            return int(out)
        time.sleep(0.5)
    raise AssertionError('the engine did not start')


def finished(bed, timeout: float) -> tuple[int, dict, str]:
    """Exit status, JSON result and stderr of the background engine once it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = bed.ssh(GUEST, ['cat', f'{RUNDIR}/rc'], check=False).stdout.strip()
        if rc:
            out = bed.ssh(GUEST, ['cat', f'{RUNDIR}/out.json'], check=False).stdout
            err = bed.ssh(GUEST, ['cat', f'{RUNDIR}/err.txt'], check=False).stdout
            return int(rc), (json.loads(out) if out.strip() else {}), err
        time.sleep(0.5)
    raise AssertionError(f'the engine did not end within {timeout:g} s')


def wait_for_progress(bed, minimum: int = 4 << 20, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        _pid, done = receive_progress(bed)
        if done > minimum:
            return
        time.sleep(1)
    raise AssertionError(f'the receive never made progress ({done} bytes)')


def leftovers(bed) -> list[str]:
    return bed.sh(GUEST, LEFTOVERS).stdout.splitlines()


def control_dirs(bed) -> list[str]:
    return bed.sh(GUEST, 'ls -d /tmp/pzas-[0-9]*-* 2>/dev/null || true').stdout.split()


def wait_until_clean(bed, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    left = leftovers(bed)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftovers(bed)
    return left


def resume_and_match(bed, dataset: str) -> None:
    replica = f'{target_root(dataset)}/{dataset}/data'
    token = bed.ssh(GUEST, ['zfs', 'get', '-H', '-o', 'value', 'receive_resume_token', replica], check=False).stdout.strip()
    assert token not in ('', '-'), 'the interrupted receive left no resumable state'
    res = bed.ssh(GUEST, ['sh', '-c', f'cd {ENGINE_DIR} && exec "$@"', 'sh', *cli_argv(dataset)], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    resumed = json.loads(res.stdout)
    assert resumed['datasets'][0]['action'] == 'resume', resumed
    assert snap_guids(bed, replica, recursive=False) == snap_guids(bed, f'{dataset}/data', recursive=False)
    assert checksums(bed, f'{dataset}/data') == checksums(bed, replica)


def test_sigterm_stops_everything_and_reports(bed, dataset, engine):
    seed(bed, dataset, days=(1,), megabytes=12)
    assert not leftovers(bed), 'processes of an earlier run are still there'
    # 12 MiB at 1 MiB/s: slow enough to be caught part way
    pid = start_cli(bed, cli_argv(dataset, '--rate-limit', '1M', '--timeout', '600'))
    wait_for_progress(bed)
    bed.ssh(GUEST, ['kill', '-TERM', str(pid)])
    rc, result, err = finished(bed, 30)
    assert rc == 143, (rc, result, err)
    assert result.get('failed') is True, result
    assert result['interrupted']['signal'] == 'SIGTERM', result
    assert result['interrupted'].get('dataset', f'{dataset}/data') == f'{dataset}/data', result
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    time.sleep(5)
    assert not leftovers(bed), 'a stage or ssh process outlived the interrupted run'
    assert not control_dirs(bed), 'the interrupted run left its ssh control directory'
    resume_and_match(bed, dataset)


def test_sigkill_leaves_no_ssh_and_the_next_run_resumes(bed, dataset, engine):
    seed(bed, dataset, days=(1,), megabytes=12)
    assert not leftovers(bed), 'processes of an earlier run are still there'
    pid = start_cli(bed, cli_argv(dataset, '--rate-limit', '1M', '--timeout', '600'))
    wait_for_progress(bed)
    bed.ssh(GUEST, ['kill', '-KILL', str(pid)])
    rc, _result, _err = finished(bed, 30)
    assert rc == 137, rc
    # the kernel's parent-death signal stops the ssh master and the stream's processes
    left = wait_until_clean(bed, 10)
    assert not left, f'processes outlived the killed engine: {left}'
    stale = control_dirs(bed)
    resume_and_match(bed, dataset)
    # the killed run's control directory is removed by the next run
    assert not set(stale) & set(control_dirs(bed)), stale
