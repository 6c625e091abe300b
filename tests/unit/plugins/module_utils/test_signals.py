# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _cli
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _signals
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._signals import (
    Flag,
    deferred,
    die_with_parent,
    exit_status,
    interrupted_result,
    interrupted_signal,
    interrupts_raise,
    signal_name,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Interrupted

linux_only = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux only')


def alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(predicate: t.Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def child_env() -> dict[str, str]:
    return {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}


# ------------------------------------------------------------------ handlers
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_raises_interrupted(signum: int) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    with pytest.raises(Interrupted) as info, interrupts_raise():
        os.kill(os.getpid(), signum)
        time.sleep(5)
    assert info.value.signum == signum
    assert {s: signal.getsignal(s) for s in before} == before


def test_only_the_first_signal_raises() -> None:
    with pytest.raises(Interrupted) as info, interrupts_raise():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            # the clean-up after the first one goes on undisturbed
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    assert info.value.signum == signal.SIGTERM
    # and the next run starts afresh
    with pytest.raises(Interrupted) as again, interrupts_raise():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert again.value.signum == signal.SIGINT


def test_deferred_holds_the_signal_back() -> None:
    done = []
    with pytest.raises(Interrupted) as info, interrupts_raise():
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            done.append('clean-up finished')
    assert done == ['clean-up finished'] and info.value.signum == signal.SIGTERM


INSIDE = '<a module where raising is unsafe>'
# kills itself, then runs on a while; it gets to its end only if nothing raised inside it
UNSAFE_CODE = compile("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\n"
                      "for _ in range(10):\n    time.sleep(0.005)\nreached['end'] = True\n", INSIDE, 'exec')


def test_a_signal_inside_the_threading_module_is_raised_once_out_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_signals, '_UNSAFE_FILES', frozenset({INSIDE}))
    reached: dict[str, bool] = {}
    with interrupts_raise(), pytest.raises(Interrupted) as caught:
        exec(UNSAFE_CODE, {'reached': reached})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)
    assert reached == {'end': True}
    assert caught.value.signum == signal.SIGTERM
    # and nothing is left armed
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)


def test_the_threading_module_is_where_raising_is_unsafe() -> None:
    assert threading.__file__ in _signals._UNSAFE_FILES


def test_a_flag_set_by_a_thread_wakes_the_wait_at_once() -> None:
    flag = Flag()
    try:
        assert not flag.wait(0.01)
        setter = threading.Timer(0.05, flag.set)
        setter.start()
        started = time.monotonic()
        assert flag.wait(30)
        setter.join()
        # woken by the write, not by the 30 s timeout
        assert time.monotonic() - started < 25
        assert flag.is_set() and flag.wait(0)
    finally:
        flag.close()


def test_a_signal_stops_a_wait_for_a_flag() -> None:
    flag = Flag()
    try:
        killer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        with interrupts_raise(), pytest.raises(Interrupted):
            killer.start()
            flag.wait(30)
        killer.join()
        assert not flag.is_set()
    finally:
        flag.close()


def test_deferred_without_a_signal_raises_nothing() -> None:
    with interrupts_raise(), deferred():
        pass


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def worker() -> None:
        with interrupts_raise(), deferred():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


@pytest.mark.parametrize('signum, name, status', [
    (signal.SIGTERM, 'SIGTERM', 143),
    (signal.SIGINT, 'SIGINT', 130),
    (signal.SIGHUP, 'SIGHUP', 129),
])
def test_exit_status(signum: int, name: str, status: int) -> None:
    assert signal_name(signum) == name and exit_status(signum) == status
    result = interrupted_result(signum)
    assert result['failed'] and result['interrupted'] == {'signal': name} and name in result['msg']
    assert interrupted_signal(result) == signum


@pytest.mark.parametrize('result, expected', [
    ({}, None),
    ({'failed': True, 'msg': 'x'}, None),
    ({'interrupted': None}, None),
    ({'interrupted': {'signal': 'SIGINT', 'dataset': 'tank/a'}}, signal.SIGINT),
    ({'interrupted': {'signal': 15}}, signal.SIGTERM),
    # interrupted, but by what is unknown: still not a success
    ({'interrupted': {'dataset': 'tank/a'}}, signal.SIGTERM),
    ({'interrupted': {'signal': 'SIGBOGUS'}}, signal.SIGTERM),
])
def test_interrupted_signal(result: dict[str, t.Any], expected: int | None) -> None:
    assert interrupted_signal(result) == expected


def test_interrupted_result_names_the_dataset() -> None:
    result = interrupted_result(signal.SIGTERM, 'tank/home')
    assert result['interrupted'] == {'signal': 'SIGTERM', 'dataset': 'tank/home'} and 'tank/home' in result['msg']


# ------------------------------------------------------------------ parent death
MIDDLE = '''
import os, subprocess, sys, threading, time
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._signals import die_with_parent
how = sys.argv[1]
def spawn():
    preexec = die_with_parent() if how != 'unprotected' else None
    child = subprocess.Popen(['sleep', '60'], preexec_fn=preexec)
    print(child.pid, flush=True)
    time.sleep(60)
if how == 'thread':
    threading.Thread(target=spawn, daemon=True).start()
    time.sleep(60)
else:
    spawn()
'''


@linux_only
@pytest.mark.parametrize('how, dies', [('main', True), ('thread', True), ('unprotected', False)])
def test_children_die_with_a_killed_parent(how: str, dies: bool) -> None:
    middle = subprocess.Popen([sys.executable, '-c', MIDDLE, how], stdout=subprocess.PIPE, env=child_env())
    try:
        grandchild = int(t.cast(t.IO[bytes], middle.stdout).readline())
        assert alive(grandchild)
        middle.kill()
        middle.wait()
        if dies:
            assert wait_for(lambda: not alive(grandchild))
        else:
            # without the helper the grandchild outlives it: what the helper is for
            time.sleep(1)
            assert alive(grandchild)
            os.kill(grandchild, signal.SIGKILL)
    finally:
        middle.kill()
        middle.wait()
        t.cast(t.IO[bytes], middle.stdout).close()


@linux_only
def test_die_with_parent_is_harmless_for_a_living_parent() -> None:
    out = subprocess.run(['sh', '-c', 'echo ok'], preexec_fn=die_with_parent(), capture_output=True, check=True)
    assert out.stdout == b'ok\n'


# ------------------------------------------------------------------ command line
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = _cli.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _signalled(signum: int) -> t.Callable[[t.Any], tuple[int, dict[str, t.Any]]]:
    def run(args: t.Any) -> tuple[int, dict[str, t.Any]]:
        os.kill(os.getpid(), signum)
        time.sleep(5)
        return 0, {'changed': True}
    return run


def _returns_interrupted(args: t.Any) -> tuple[int, dict[str, t.Any]]:
    return 1, {'failed': True, 'changed': True, 'msg': 'interrupted by SIGINT while replicating tank/a',
               'interrupted': {'signal': 'SIGINT', 'dataset': 'tank/a'}}


def _raises_interrupted(args: t.Any) -> tuple[int, dict[str, t.Any]]:
    exc = Interrupted(signal.SIGTERM)
    exc.dataset = 'tank/b'  # type: ignore[attr-defined]
    raise exc


@pytest.mark.parametrize('func, status, interrupted', [
    (_signalled(signal.SIGTERM), 143, {'signal': 'SIGTERM'}),
    (_signalled(signal.SIGINT), 130, {'signal': 'SIGINT'}),
    (_signalled(signal.SIGHUP), 129, {'signal': 'SIGHUP'}),
    (_returns_interrupted, 130, {'signal': 'SIGINT', 'dataset': 'tank/a'}),
    (_raises_interrupted, 143, {'signal': 'SIGTERM', 'dataset': 'tank/b'}),
])
def test_cli_exit_status_of_an_interrupted_replication(monkeypatch: pytest.MonkeyPatch, func: t.Any, status: int,
                                                       interrupted: dict[str, str]) -> None:
    monkeypatch.setattr(_cli, '_run_replicate', func)
    before = signal.getsignal(signal.SIGTERM)
    code, out, err = run_cli(['replicate', 'tank/a', '--target-root', 'zfsbackups/x'])
    assert code == status
    result = json.loads(out)
    assert result['failed'] is True and result['interrupted'] == interrupted
    assert result['msg'] and len(err.splitlines()) == 1 and err.startswith('error: interrupted')
    assert signal.getsignal(signal.SIGTERM) == before


def test_cli_without_json_says_it_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, '_run_autosnap', _signalled(signal.SIGTERM))
    code, out, err = run_cli(['autosnap', '--root', 'tank', '--policy', 'daily=7'])
    assert code == 143 and out == ''
    assert err == 'error: interrupted by SIGTERM; every stage stopped, resumable state kept\n'


def test_cli_success_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, '_run_replicate', lambda args: (0, {'changed': False}))
    code, out, err = run_cli(['replicate', 'tank/a'])
    assert code == 0 and 'interrupted' not in json.loads(out) and err == ''


ENGINE = '''
import sys
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _cli
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import run_pipeline
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import LocalSegment, Stage
tag = 'echo $$ >> "$0"; exec '
def replicate(args):
    run_pipeline(LocalSegment([Stage('send', ('sh', '-c', tag + 'yes', sys.argv[1]))]),
                 LocalSegment([Stage('mbuffer', ('sh', '-c', tag + 'cat', sys.argv[1])),
                               Stage('receive', ('sh', '-c', tag + 'sleep 60', sys.argv[1]))]))
    return 0, {'changed': True}
_cli._run_replicate = replicate
sys.exit(_cli.main(['replicate', 'tank/a']))
'''


@pytest.mark.parametrize('signum, status', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_engine_stops_its_stream_and_reports(tmp_path: pathlib.Path, signum: int, status: int) -> None:
    pids = tmp_path / 'pids'
    engine = subprocess.Popen([sys.executable, '-c', ENGINE, str(pids)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=child_env())
    try:
        assert wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3, 20)
        stages = [int(p) for p in pids.read_text().split()]
        engine.send_signal(signum)
        out, err = engine.communicate(timeout=30)
    finally:
        engine.kill()
        engine.wait()
    assert engine.returncode == status, err
    assert json.loads(out)['interrupted'] == {'signal': signal_name(signum)}
    assert err.decode().count('\n') == 1 and 'Traceback' not in err.decode()
    assert not [pid for pid in stages if alive(pid)]
