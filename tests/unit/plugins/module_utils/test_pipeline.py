# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import estimate_argv, receive_argv, send_argv
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import (
    PipelineError,
    StageResult,
    culprit,
    describe,
    expand,
    mbuffer_argv,
    receiver_stages,
    run_pipeline,
    sender_stages,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._signals import Flag, interrupts_raise
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import (
    RC_MARKER,
    ChannelSegment,
    LocalSegment,
    Stage,
    quote_argv,
    remote_script,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Interrupted, ZfsCommandError


# ------------------------------------------------------------------ argv
@pytest.mark.parametrize('args, raw, expected', [
    (['tank/a@s1'], False, ('zfs', 'send', '-L', '-e', '-c', 'tank/a@s1')),
    (['tank/a@s1'], True, ('zfs', 'send', '-w', 'tank/a@s1')),
    (['-I', 'tank/a@s1', 'tank/a@s3'], False, ('zfs', 'send', '-L', '-e', '-c', '-I', 'tank/a@s1', 'tank/a@s3')),
    (['-i', 'tank/a#s1', 'tank/a@s2'], True, ('zfs', 'send', '-w', '-i', 'tank/a#s1', 'tank/a@s2')),
    (['-t', '1-abc-def'], True, ('zfs', 'send', '-t', '1-abc-def')),
])
def test_send_argv(args: list[str], raw: bool, expected: tuple[str, ...]) -> None:
    assert send_argv(args, raw) == expected


def test_estimate_argv_is_a_dry_run() -> None:
    assert estimate_argv(['tank/a@s1'], False) == ('zfs', 'send', '-n', '-v', '-P', '-L', '-e', '-c', 'tank/a@s1')
    assert estimate_argv(['-t', 'tok'], False) == ('zfs', 'send', '-n', '-v', '-P', '-t', 'tok')


@pytest.mark.parametrize('filesystem, rollback, props, exclude, expected', [
    (True, False, {}, [], ('zfs', 'receive', '-s', '-u', '-o', 'readonly=on', '-o', 'com.sun:auto-snapshot=false',
                           '-o', 'canmount=noauto', 'backup/t')),
    # canmount does not exist for volumes
    (False, False, {'canmount': 'off'}, [], ('zfs', 'receive', '-s', '-u', '-o', 'readonly=on',
                                             '-o', 'com.sun:auto-snapshot=false', 'backup/t')),
    (True, True, {'readonly': 'off', 'org.example:note': 'a b'}, ['mountpoint'],
     ('zfs', 'receive', '-s', '-u', '-F', '-o', 'readonly=off', '-o', 'com.sun:auto-snapshot=false', '-o', 'canmount=noauto',
      '-o', 'org.example:note=a b', '-x', 'mountpoint', 'backup/t')),
])
def test_receive_argv(filesystem: bool, rollback: bool, props: dict, exclude: list, expected: tuple) -> None:
    assert receive_argv('backup/t', filesystem=filesystem, rollback=rollback, properties=props, exclude=exclude) == expected


def test_mbuffer_and_stages() -> None:
    assert mbuffer_argv('128M') == ('mbuffer', '-q', '-s', '128k', '-m', '128M', '-W', '300')
    assert mbuffer_argv('1G', 0, '50M') == ('mbuffer', '-q', '-s', '128k', '-m', '1G', '-r', '50M')
    send = sender_stages(('zfs', 'send', 'a@b'), mbuffer=('mbuffer',), compression='zstd')
    assert [s.name for s in send] == ['send', 'mbuffer', 'compress']
    assert send[2].argv == ('zstd', '-q', '-c')
    recv = receiver_stages(('zfs', 'receive', 'x'), mbuffer=('mbuffer',), compression='lz4')
    assert [s.name for s in recv] == ['decompress', 'mbuffer', 'receive']
    assert recv[0].argv == ('lz4', '-q', '-d', '-c')
    assert [s.name for s in receiver_stages(('zfs', 'receive', 'x'))] == ['receive']


# ------------------------------------------------------------------ attribution
def res(name: str, rc: int | None, stderr: str = '', killed: bool = False) -> StageResult:
    return StageResult(name, [name], rc, stderr, killed)


@pytest.mark.parametrize('results, expected', [
    ([res('send', 0), res('receive', 0)], None),
    # the receiver ran out of space; everything upstream died of it
    ([res('send', 1, "warning: cannot send 'tank/a@s': Broken pipe"), res('mbuffer', 1, 'error: outputThread: Broken pipe'),
      res('receive', 1, 'cannot receive incremental stream: out of space')], 'receive'),
    ([res('send', -13), res('receive', 1, 'cannot receive: failed to read from stream')], 'receive'),
    # the sender failed; the receiver only saw a short stream
    ([res('send', 1, "cannot open 'tank/a@s': dataset does not exist"), res('receive', 1, 'failed to read from stream')], 'send'),
    ([res('compress', 0), res('ssh', 255, 'ssh: connect to host b port 22: Connection refused'), res('send', -15, killed=True)], 'ssh'),
    # a missing program wins over everything
    ([res('decompress', 1, 'Broken pipe'), res('mbuffer', 127, 'sh: 1: mbuffer: not found'), res('receive', 1, 'x')], 'mbuffer'),
    # only victims: blame the last one
    ([res('send', -13), res('mbuffer', 1, 'Broken pipe')], 'mbuffer'),
    ([res('send', None), res('receive', 0)], None),
])
def test_culprit(results: list[StageResult], expected: str | None) -> None:
    found = culprit(results)
    assert (found.name if found else None) == expected


def test_expand_reads_remote_markers() -> None:
    remote = (Stage('decompress', ('zstd', '-d')), Stage('mbuffer', ('mbuffer',)), Stage('receive', ('zfs', 'receive', 't')))
    ssh = Stage('ssh', ('ssh', 'host', 'cmd'), remote=remote)
    stderr = f'{RC_MARKER} 0 0\nmbuffer: error: outputThread: Broken pipe\n{RC_MARKER} 1 1\ncannot receive: out of space\n'
    results = expand(ssh, 1, stderr)
    assert [(r.name, r.rc) for r in results] == [('decompress', 0), ('mbuffer', 1), ('receive', 1)]
    assert RC_MARKER not in results[2].stderr and 'out of space' in results[2].stderr
    assert [(r.name, r.rc) for r in expand(ssh, 255, 'Host key verification failed.')] == [('ssh', 255)]
    assert [(r.name, r.rc) for r in expand(ssh, -9, '')] == [('ssh', -9)]


# ------------------------------------------------------------------ running local pipelines
@pytest.fixture
def payload(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / 'stream.bin'
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def local(*stages: tuple[str, tuple[str, ...]]) -> LocalSegment:
    return LocalSegment([Stage(name, argv) for name, argv in stages])


def test_data_flows_through(payload: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / 'out.bin'
    result = run_pipeline(local(('send', ('cat', str(payload)))), local(('receive', ('dd', f'of={out}', 'bs=1M', 'status=none'))))
    assert out.read_bytes() == payload.read_bytes()
    assert result.bytes == payload.stat().st_size
    assert [(s.name, s.rc) for s in result.stages] == [('send', 0), ('receive', 0)]


def test_multi_stage_halves(payload: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / 'out.bin'
    producer = local(('send', ('cat', str(payload))), ('compress', ('gzip', '-1', '-c')))
    consumer = local(('decompress', ('gzip', '-d', '-c')), ('mbuffer', ('cat',)), ('receive', ('dd', f'of={out}', 'status=none')))
    result = run_pipeline(producer, consumer)
    assert out.read_bytes() == payload.read_bytes()
    assert 0 < result.bytes
    assert [s.name for s in result.stages] == ['send', 'compress', 'decompress', 'mbuffer', 'receive']


def test_receiver_failure_is_blamed_on_the_receiver() -> None:
    consumer = local(('mbuffer', ('cat',)),
                     ('receive', ('sh', '-c', 'head -c 1000 >/dev/null; echo "cannot receive new filesystem stream: out of space" >&2; exit 1')))
    with pytest.raises(PipelineError) as info:
        run_pipeline(local(('send', ('yes',))), consumer, timeout=30)
    err = info.value
    assert err.stage == 'receive' and err.rc == 1 and 'out of space' in err.stderr
    assert err.cmd[0] == 'sh'
    assert {s.name for s in err.stages} == {'send', 'mbuffer', 'receive'}
    assert err.as_dict()['stage'] == 'receive' and len(err.as_dict()['stages']) == 3


def test_sender_failure_is_blamed_on_the_sender() -> None:
    producer = local(('send', ('sh', '-c', 'printf partial; echo "cannot open \'tank/a@s\': dataset does not exist" >&2; exit 1')))
    consumer = local(('receive', ('sh', '-c', 'cat >/dev/null; echo "cannot receive: failed to read from stream" >&2; exit 1')))
    with pytest.raises(PipelineError) as info:
        run_pipeline(producer, consumer)
    assert info.value.stage == 'send' and 'does not exist' in info.value.stderr


def test_missing_program() -> None:
    with pytest.raises(ZfsCommandError) as info:
        run_pipeline(local(('send', ('cat', '/dev/null'))), local(('mbuffer', ('/nonexistent/mbuffer',)), ('receive', ('cat',))))
    assert info.value.stage == 'mbuffer' and info.value.rc == 127


def test_timeout_kills_everything() -> None:
    started = time.monotonic()
    with pytest.raises(PipelineError) as info:
        run_pipeline(local(('send', ('sleep', '30'))), local(('receive', ('sleep', '30'))), timeout=0.5)
    assert info.value.stage == 'timeout'
    assert time.monotonic() - started < 10
    assert all(s.rc is not None and s.rc != 0 for s in info.value.stages)


# ------------------------------------------------------------------ channel halves (paramiko's shape)
class LoopbackProcess:
    """A RemoteProcess that runs the 'remote' command line on this host, the way sshd would."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.proc = subprocess.Popen(['sh', '-c', command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._err = b''
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        self._err = t.cast(t.IO[bytes], self.proc.stderr).read()

    def read(self, size: int) -> bytes:
        return os.read(t.cast(t.IO[bytes], self.proc.stdout).fileno(), size)

    def write(self, data: bytes) -> None:
        stdin = t.cast(t.IO[bytes], self.proc.stdin)
        stdin.write(data)
        stdin.flush()

    def close_stdin(self) -> None:
        t.cast(t.IO[bytes], self.proc.stdin).close()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._thread.join(5)
        return rc

    def stderr_text(self) -> str:
        return self._err.decode()

    def kill(self) -> None:
        # a closed channel: the remote command sees EOF, whichever of its processes sshd's kill missed
        stdin = t.cast(t.IO[bytes], self.proc.stdin)
        if not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def channel(*stages: tuple[str, tuple[str, ...]]) -> ChannelSegment:
    staged = [Stage(name, argv) for name, argv in stages]
    script = remote_script(staged)
    return ChannelSegment(staged, lambda: LoopbackProcess(script), 'backup.example.org')


def test_push_through_a_channel(payload: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / 'out.bin'
    producer = local(('send', ('cat', str(payload))), ('compress', ('gzip', '-1', '-c')))
    consumer = channel(('decompress', ('gzip', '-d', '-c')), ('mbuffer', ('cat',)), ('receive', ('dd', f'of={out}', 'status=none')))
    result = run_pipeline(producer, consumer)
    assert out.read_bytes() == payload.read_bytes()
    assert [(s.name, s.rc) for s in result.stages] == [('send', 0), ('compress', 0), ('decompress', 0), ('mbuffer', 0), ('receive', 0)]


def test_pull_through_a_channel(payload: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / 'out.bin'
    producer = channel(('send', ('cat', str(payload))))
    result = run_pipeline(producer, local(('receive', ('dd', f'of={out}', 'status=none'))))
    assert out.read_bytes() == payload.read_bytes()
    assert result.bytes == payload.stat().st_size


def test_remote_stage_failure_is_attributed(payload: pathlib.Path) -> None:
    consumer = channel(('decompress', ('cat',)),
                       ('mbuffer', ('sh', '-c', 'head -c 10 >/dev/null; echo "mbuffer: error: watchdog timeout" >&2; exit 3')),
                       ('receive', ('sh', '-c', 'cat >/dev/null; echo "cannot receive: failed to read from stream" >&2; exit 1')))
    with pytest.raises(PipelineError) as info:
        run_pipeline(local(('send', ('cat', str(payload)))), consumer, timeout=30)
    assert info.value.stage == 'mbuffer' and info.value.rc == 3


def test_describe() -> None:
    text = describe(local(('send', ('zfs', 'send', 'tank/a b@s'))), channel(('receive', ('zfs', 'receive', 'x'))))
    assert text == "zfs send 'tank/a b@s' | ssh backup.example.org: zfs receive x"


@pytest.mark.parametrize('compression', ['zstd', 'lz4'])
def test_real_tools_round_trip(compression: str, payload: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # the exact argv the engine uses, where the tools are installed
    for tool in (compression, 'mbuffer'):
        if not shutil.which(tool):
            pytest.skip(f'{tool} not installed')
    out = tmp_path / 'out.bin'
    producer = LocalSegment(sender_stages(('cat', str(payload)), mbuffer=mbuffer_argv('8M', 60), compression=compression))
    consumer = LocalSegment(receiver_stages(('dd', f'of={out}', 'status=none'), mbuffer=mbuffer_argv('8M', 60, '500M'),
                                            compression=compression))
    result = run_pipeline(producer, consumer, timeout=60)
    assert out.read_bytes() == payload.read_bytes()
    assert [s.rc for s in result.stages] == [0] * 6


# ------------------------------------------------------------------ interrupts and process lifetime
def alive(pid: int) -> bool:
    """True while *pid* runs; a zombie counts as dead (its reaper may not be us)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError):
        return False


def recorded(path: pathlib.Path, count: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(p) for p in path.read_text().split()] if path.exists() else []
        if len(pids) >= count:
            return pids
        time.sleep(0.02)
    raise AssertionError(f'stages did not start: {path.read_text() if path.exists() else "nothing"}')


def tagged(pids: pathlib.Path, argv: str) -> tuple[str, ...]:
    # the stage writes its pid, then becomes the program (exec keeps the pid)
    return ('sh', '-c', f'echo $$ >> "$0"; exec {argv}', str(pids))


class SignalAfter(threading.Thread):
    """Sends *signums* to this process once *count* stages have written their pids."""

    def __init__(self, pids: pathlib.Path, count: int, *signums: int, ready: t.Callable[[], object] = lambda: True) -> None:
        super().__init__(daemon=True)
        self.pids, self.count, self.signums, self.ready = pids, count, signums, ready

    def run(self) -> None:
        recorded(self.pids, self.count)
        while not self.ready():
            time.sleep(0.01)
        for signum in self.signums:
            os.kill(os.getpid(), signum)


class Boom(Exception):
    pass


def pipeline_waits() -> bool:
    """True while the main thread waits for the stream to end (run_pipeline's wait loop)."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code is Flag.wait.__code__:
            return True
        frame = frame.f_back
    return False


def _boom(signum: int, frame: object) -> None:
    raise Boom(signum)


@pytest.mark.parametrize('signums, expected', [
    ((signal.SIGTERM,), Interrupted),
    ((signal.SIGINT,), Interrupted),
    # a second signal while the stages are being stopped must not cut that short
    ((signal.SIGTERM, signal.SIGTERM), Interrupted),
    ((signal.SIGUSR1,), Boom),
])
def test_an_interrupt_stops_every_stage(tmp_path: pathlib.Path, signums: tuple[int, ...], expected: type[BaseException]) -> None:
    pids = tmp_path / 'pids'
    producer = local(('send', tagged(pids, 'yes')), ('compress', tagged(pids, 'cat')))
    consumer = local(('mbuffer', tagged(pids, 'cat')), ('receive', tagged(pids, 'sleep 60')))
    threads = set(threading.enumerate())
    previous = signal.signal(signal.SIGUSR1, _boom)
    # an exception from a handler that is not the engine's is held back nowhere: raised inside Popen's wait
    # for the exec, it loses the child with the Popen object (CPython); the promise is for the wait
    sender = SignalAfter(pids, 4, *signums, ready=pipeline_waits if expected is Boom else lambda: True)
    started = time.monotonic()
    try:
        with interrupts_raise(), pytest.raises(expected) as info:
            sender.start()
            run_pipeline(producer, consumer, timeout=60)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    sender.join(5)
    if expected is Interrupted:
        assert t.cast(Interrupted, info.value).signum == signums[0]
    assert time.monotonic() - started < 30
    for pid in recorded(pids, 4):
        assert not alive(pid), pid
        # reaped by the pipeline, not left a zombie
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert no_new_threads(threads)


def no_new_threads(before: set[threading.Thread]) -> bool:
    # a thread that is done may take a moment to leave threading.enumerate()
    deadline = time.monotonic() + 2
    while not set(threading.enumerate()) <= before and time.monotonic() < deadline:
        time.sleep(0.01)
    return set(threading.enumerate()) <= before


def test_an_interrupt_closes_the_channel(tmp_path: pathlib.Path) -> None:
    pids = tmp_path / 'pids'
    started: list[LoopbackProcess] = []

    def start() -> LoopbackProcess:
        started.append(LoopbackProcess(quote_argv(tagged(pids, 'cat >/dev/null'))))
        return started[-1]

    consumer = ChannelSegment([Stage('receive', ('cat',))], start, 'backup.example.org')
    threads = set(threading.enumerate())
    # the stand-in for a channel is no ChannelProcess: it must exist before it can be stopped
    sender = SignalAfter(pids, 2, signal.SIGTERM, ready=lambda: started)
    with interrupts_raise(), pytest.raises(Interrupted):
        sender.start()
        run_pipeline(local(('send', tagged(pids, 'yes'))), consumer)
    sender.join(5)
    assert started and started[0].proc.poll() is not None
    # the 'remote' stage ends on its own once its channel is gone, as on another host
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in recorded(pids, 2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in recorded(pids, 2) if alive(pid)]
    while not set(threading.enumerate()) <= threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(threading.enumerate()) <= threads


def test_a_failed_start_leaves_no_stage_behind(tmp_path: pathlib.Path) -> None:
    pids = tmp_path / 'pids'
    with pytest.raises(ZfsCommandError):
        run_pipeline(local(('send', tagged(pids, 'sleep 60')), ('compress', tagged(pids, 'sleep 60'))),
                     local(('receive', ('/nonexistent/zfs', 'receive'))))
    for pid in recorded(pids, 2):
        assert not alive(pid), pid


ENGINE = '''
import sys
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import run_pipeline
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import LocalSegment, Stage
tag = 'echo $$ >> "$0"; exec '
run_pipeline(LocalSegment([Stage('send', ('sh', '-c', tag + 'yes', sys.argv[1]))]),
             LocalSegment([Stage('mbuffer', ('sh', '-c', tag + 'cat', sys.argv[1])),
                           Stage('receive', ('sh', '-c', tag + 'sleep 60', sys.argv[1]))]))
'''


def test_stages_die_with_a_killed_engine(tmp_path: pathlib.Path) -> None:
    pids = tmp_path / 'pids'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    engine = subprocess.Popen([sys.executable, '-c', ENGINE, str(pids)], env=env)
    try:
        stages = recorded(pids, 3)
        engine.kill()
    finally:
        engine.kill()
        engine.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in stages) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in stages if alive(pid)]
