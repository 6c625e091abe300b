# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The stream: ``zfs send`` → compress → ssh → mbuffer → ``zfs receive`` as processes and pipes.

A pipeline has two halves, each a *segment* a transport built: the producer
(ending in the stream) and the consumer (starting with it). Within a segment
processes are joined by OS pipes; between the halves one thread moves the
bytes (``splice`` where the OS has it, so no copy through Python). Sitting
there lets the engine count the bytes, enforce the deadline and notice a
consumer that died, without any shell.

When a run fails the blame goes to the stage that caused it, not to the ones
that died of a broken pipe because of it.

Whatever ends the wait early (a timeout, :class:`~._types.Interrupted`, any
other exception) stops every stage before it propagates: local processes get
SIGTERM and, after a grace period, SIGKILL; channels are closed; the threads
that moved the stream are joined. Nothing is cleaned up on the receiving side:
a ``zfs receive -s`` stopped half way keeps its resumable state. Every process
also gets the parent-death signal, so a SIGKILLed engine leaves none behind;
the stages are started by the thread calling :func:`run_pipeline`, which
therefore must outlive them (it does: it waits for them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import subprocess
import tempfile
import threading
import time
import typing as t

from ._signals import Flag, deferred, die_with_parent
from ._transport import ChannelSegment, LocalSegment, RemoteProcess, Segment, Stage, quote_argv, split_markers
from ._types import ZfsCommandError

CHUNK = 1024 * 1024
# Linux F_SETPIPE_SZ; the default 64 KiB pipe makes the pump wake up 16 times per MiB
_F_SETPIPE_SZ = getattr(fcntl, 'F_SETPIPE_SZ', 1031)
KILL_GRACE = 5.0
# an interrupted run is being waited for (systemd, a job runner): stop quickly
INTERRUPT_GRACE = 2.0
POLL = 0.2

COMPRESSORS = {
    'zstd': (('zstd', '-q', '-c'), ('zstd', '-q', '-d', '-c')),
    'lz4': (('lz4', '-q', '-c'), ('lz4', '-q', '-d', '-c')),
}

_NOT_FOUND_RCS = (126, 127)


# ------------------------------------------------------------------ stage builders
def mbuffer_argv(size: str, watchdog: int = 300, rate: str | None = None) -> tuple[str, ...]:
    argv = ['mbuffer', '-q', '-s', '128k', '-m', size]
    if watchdog:
        argv += ['-W', str(watchdog)]
    if rate:
        argv += ['-r', rate]
    return tuple(argv)


def sender_stages(send: t.Sequence[str], *, mbuffer: t.Sequence[str] | None = None,
                  compression: str | None = None) -> list[Stage]:
    stages = [Stage('send', tuple(send))]
    if mbuffer:
        stages.append(Stage('mbuffer', tuple(mbuffer)))
    if compression:
        stages.append(Stage('compress', COMPRESSORS[compression][0]))
    return stages


def receiver_stages(receive: t.Sequence[str], *, mbuffer: t.Sequence[str] | None = None,
                    compression: str | None = None) -> list[Stage]:
    stages = []
    if compression:
        stages.append(Stage('decompress', COMPRESSORS[compression][1]))
    if mbuffer:
        stages.append(Stage('mbuffer', tuple(mbuffer)))
    stages.append(Stage('receive', tuple(receive)))
    return stages


def describe(producer: Segment, consumer: Segment) -> str:
    def names(seg: Segment) -> list[str]:
        if isinstance(seg, ChannelSegment):
            return [f'ssh {seg.host}: ' + ' | '.join(quote_argv(s.argv) for s in seg.stages)]
        return [quote_argv(s.argv) if not s.remote else 'ssh: ' + ' | '.join(quote_argv(r.argv) for r in s.remote)
                for s in seg.stages]
    return ' | '.join(names(producer) + names(consumer))


# ------------------------------------------------------------------ results
@dataclasses.dataclass
class StageResult:
    name: str
    argv: list[str]
    rc: int | None
    stderr: str
    killed: bool = False

    @property
    def failed(self) -> bool:
        return self.rc not in (0, None)

    @property
    def broken_pipe(self) -> bool:
        text = self.stderr.lower()
        return self.rc in (141, -13) or 'broken pipe' in text or 'signal received' in text


@dataclasses.dataclass
class PipelineResult:
    bytes: int
    seconds: float
    stages: list[StageResult]


class PipelineError(ZfsCommandError):
    """A stream failed; ``stage`` names the culprit, ``stages`` has every stage's outcome."""

    def __init__(self, cmd: t.Sequence[str], rc: int, stderr: str, stage: str, stages: list[StageResult]) -> None:
        super().__init__(cmd, rc, '', stderr, stage=stage)
        self.stages = stages

    def as_dict(self) -> dict[str, t.Any]:
        out = super().as_dict()
        out['stages'] = [dataclasses.asdict(s) for s in self.stages]
        return out


def culprit(results: t.Sequence[StageResult]) -> StageResult | None:
    """The stage that caused a failure: a missing program, else the first failure that is not a victim."""
    failed = [r for r in results if r.failed]
    if not failed:
        return None
    for r in failed:
        if r.rc in _NOT_FOUND_RCS:
            return r
    causes = [r for r in failed if not r.broken_pipe and not r.killed]
    return causes[0] if causes else failed[-1]


def expand(stage: Stage, rc: int | None, stderr: str, killed: bool = False) -> list[StageResult]:
    """Results of a stage; a transport stage becomes the remote stages it ran (unless ssh itself failed)."""
    if not stage.remote:
        return [StageResult(stage.name, list(stage.argv), rc, stderr, killed)]
    if rc is None or rc < 0 or rc == 255:
        return [StageResult('ssh', list(stage.argv), rc, stderr, killed)]
    codes, text = split_markers(stderr)
    last = len(stage.remote) - 1
    return [StageResult(sub.name, list(sub.argv), rc if i == last else codes.get(i), text, killed)
            for i, sub in enumerate(stage.remote)]


# ------------------------------------------------------------------ running halves
def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, CHUNK)
    except OSError:
        # not Linux, or over the unprivileged limit: the default size only costs CPU
        pass


class _LocalHalf:
    """A LocalSegment's processes; the producer's last stdout or the consumer's first stdin faces the pump."""

    def __init__(self, segment: LocalSegment, consumer: bool, env: t.Mapping[str, str]) -> None:
        self.stages = segment.stages
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errs: list[t.IO[bytes]] = []
        self.killed: set[int] = set()
        self.fd: int | None = None
        try:
            self._spawn(consumer, env)
        except BaseException:
            # a failed start or a signal half way: none of the started stages may stay behind
            self.kill(INTERRUPT_GRACE)
            self.close()
            raise

    def _spawn(self, consumer: bool, env: t.Mapping[str, str]) -> None:
        prev: t.IO[bytes] | None = None
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            if index == 0:
                stdin: t.Any = subprocess.PIPE if consumer else subprocess.DEVNULL
            else:
                stdin = prev
            stdout = subprocess.DEVNULL if (consumer and index == last) else subprocess.PIPE
            err = tempfile.TemporaryFile()
            self.errs.append(err)
            try:
                # a signal inside Popen (it waits for the exec) would lose a started child: held back
                # until the child is in the list, where whatever is raised finds it and stops it
                with deferred():
                    # preexec_fn only makes one prctl call (see _signals.die_with_parent): no lock it could wait for
                    proc = subprocess.Popen(list(stage.argv), stdin=stdin, stdout=stdout, stderr=err, env=dict(env),
                                            preexec_fn=die_with_parent())  # noqa: PLW1509
                    self.procs.append(proc)
            except OSError as exc:
                raise ZfsCommandError(stage.argv, 127, '', str(exc), stage=stage.name) from exc
            finally:
                if prev is not None:
                    # only the next process may hold the read end, or EOF/SIGPIPE never arrive
                    prev.close()
            prev = proc.stdout
        if consumer:
            self.fd = t.cast(t.IO[bytes], self.procs[0].stdin).fileno()
        else:
            self.fd = t.cast(t.IO[bytes], prev).fileno()
        _grow_pipe(self.fd)

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def failed_early(self) -> bool:
        return any(p.poll() not in (None, 0) for p in self.procs)

    def kill(self, grace: float = KILL_GRACE) -> None:
        for index, proc in enumerate(self.procs):
            if proc.poll() is None:
                self.killed.add(index)
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.procs:
            # reaped, so no zombie is left for a caller that goes on to the next dataset
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)

    def wait(self, deadline: float | None) -> bool:
        for proc in self.procs:
            try:
                proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def results(self) -> list[StageResult]:
        out = []
        for index, (stage, proc, err) in enumerate(zip(self.stages, self.procs, self.errs)):
            err.seek(0)
            text = err.read().decode('utf-8', 'replace')
            out.extend(expand(stage, proc.returncode, text, index in self.killed))
        return out

    def close(self) -> None:
        for proc in self.procs:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
        for err in self.errs:
            err.close()


class _ChannelHalf:
    """A ChannelSegment's remote command; a consumer's remote stdout is drained so its window never fills."""

    def __init__(self, segment: ChannelSegment, consumer: bool) -> None:
        self.segment = segment
        self.proc: RemoteProcess = segment.start()
        self.rc: int | None = None
        self.killed = False
        self._drain: threading.Thread | None = None
        try:
            if consumer:
                self._drain = threading.Thread(target=self._discard, daemon=True)
                self._drain.start()
        except BaseException:
            # no thread for the drain: the channel is not in the pipeline's hands yet
            self.proc.kill()
            raise

    def _discard(self) -> None:
        try:
            while self.proc.read(CHUNK):
                pass
        except (OSError, EOFError):
            pass

    def alive(self) -> bool:
        if self.rc is None:
            self.rc = self.proc.wait(0)
        return self.rc is None

    def failed_early(self) -> bool:
        return not self.alive() and self.rc != 0

    def kill(self, grace: float = KILL_GRACE) -> None:
        if self.alive():
            self.killed = True
        self.proc.kill()

    def join(self, timeout: float) -> None:
        if self._drain is not None:
            self._drain.join(timeout)

    def wait(self, deadline: float | None) -> bool:
        if self.rc is None:
            self.rc = self.proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.rc is not None

    def results(self) -> list[StageResult]:
        wrapper = Stage('ssh', ('ssh', self.segment.host, self.proc.command), remote=tuple(self.segment.stages))
        return expand(wrapper, self.rc, self.proc.stderr_text(), self.killed)

    def close(self) -> None:
        self.proc.kill()


_Half = t.Union[_LocalHalf, _ChannelHalf]


def _start(segment: Segment, consumer: bool, env: t.Mapping[str, str]) -> _Half:
    if isinstance(segment, ChannelSegment):
        return _ChannelHalf(segment, consumer)
    return _LocalHalf(segment, consumer, env)


class _Pump(threading.Thread):
    """Moves the stream from the producer half to the consumer half and counts it."""

    def __init__(self, producer: _Half, consumer: _Half) -> None:
        super().__init__(daemon=True)
        self.producer = producer
        self.consumer = consumer
        self.bytes = 0
        self.error: str | None = None
        # waited on instead of join(): a join that a signal interrupts marks the thread as
        # ended although it still runs (CPython's Thread._wait_for_tstate_lock); and a Flag,
        # not an Event, so that a signal stops the wait at once
        self.done = Flag()

    def run(self) -> None:
        try:
            if isinstance(self.producer, _LocalHalf) and isinstance(self.consumer, _LocalHalf) and hasattr(os, 'splice'):
                self._splice(t.cast(int, self.producer.fd), t.cast(int, self.consumer.fd))
            else:
                self._copy()
        except BrokenPipeError:
            self.error = 'the receiving side closed the stream before its end'
        except Exception as exc:
            # a channel closed under it (say) is the stream's error, never a thread's traceback
            self.error = f'stream copy failed: {exc}'
        finally:
            # the halves may be torn down under it; nothing here is worth a traceback
            with contextlib.suppress(Exception):
                self._finish()
            self.done.set()

    def stop_wait(self, timeout: float) -> None:
        if self.done.wait(timeout):
            # only the thread's own exit is left
            self.join(timeout)

    def _splice(self, src: int, dst: int) -> None:
        while True:
            try:
                moved = os.splice(src, dst, CHUNK)
            except OSError as exc:
                if exc.errno == errno.EINVAL and not self.bytes:
                    self._copy()
                    return
                raise
            if not moved:
                return
            self.bytes += moved

    def _read(self) -> bytes:
        if isinstance(self.producer, _ChannelHalf):
            return self.producer.proc.read(CHUNK)
        return os.read(t.cast(int, self.producer.fd), CHUNK)

    def _write(self, data: bytes) -> None:
        if isinstance(self.consumer, _ChannelHalf):
            self.consumer.proc.write(data)
            return
        view = memoryview(data)
        while view:
            written = os.write(t.cast(int, self.consumer.fd), view)
            view = view[written:]

    def _copy(self) -> None:
        while True:
            data = self._read()
            if not data:
                return
            self._write(data)
            self.bytes += len(data)

    def _finish(self) -> None:
        # EOF for the consumer; a producer still writing gets EPIPE instead of blocking forever
        if isinstance(self.consumer, _LocalHalf):
            stdin = self.consumer.procs[0].stdin
            if stdin is not None and not stdin.closed:
                try:
                    stdin.close()
                except OSError:
                    pass
        else:
            try:
                self.consumer.proc.close_stdin()
            except (OSError, EOFError):
                pass
        if isinstance(self.producer, _LocalHalf):
            stdout = self.producer.procs[-1].stdout
            if stdout is not None and not stdout.closed:
                stdout.close()
        elif self.error:
            self.producer.kill()


def _stop(halves: t.Sequence[_Half], pump: _Pump | None, grace: float) -> None:
    """Stop every stage still running, then wait for the threads that moved the stream."""
    for half in halves:
        if half.alive():
            half.kill(grace)
    if pump is not None:
        pump.stop_wait(grace)
    for half in halves:
        if isinstance(half, _ChannelHalf):
            half.join(grace)


def run_pipeline(producer: Segment, consumer: Segment, *, timeout: float | None = None,
                 env: t.Mapping[str, str] | None = None) -> PipelineResult:
    """Run the stream to its end; raise :class:`PipelineError` naming the stage that failed.

    Anything else raised while it waits (:class:`~._types.Interrupted` above all) stops
    every stage, joins the stream's threads and propagates unchanged.
    """
    env = dict(os.environ if env is None else env)
    env['LC_ALL'] = 'C'
    started = time.monotonic()
    deadline = started + timeout if timeout else None
    halves: list[_Half] = []
    pump: _Pump | None = None
    timed_out = False
    grace = KILL_GRACE
    try:
        for segment, consumer_side in ((producer, False), (consumer, True)):
            # a signal between a half's start and its append would leave its stages running unseen: held
            # back until the half is in the list (a channel's start waits at most for the connect timeout)
            with deferred():
                halves.append(_start(segment, consumer_side, env))
        pump = _Pump(halves[0], halves[1])
        pump.start()
        while not pump.done.wait(POLL):
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                break
            if halves[1].failed_early() and halves[0].alive():
                # nobody will read what the producer still has: stop it now
                halves[0].kill()
        if not timed_out:
            for half in halves:
                if not half.wait(deadline):
                    timed_out = True
                    break
        if timed_out:
            for half in halves:
                half.kill()
            pump.stop_wait(KILL_GRACE)
        seconds = time.monotonic() - started
        results = [r for half in halves for r in half.results()]
    except BaseException:
        # whoever waits for this run (systemd, a job runner) wants it gone soon
        grace = INTERRUPT_GRACE
        raise
    finally:
        # a second signal must not leave stages running half stopped
        with deferred():
            _stop(halves, pump, grace)
            for half in halves:
                half.close()
            if pump is not None and pump.done.is_set():
                # a thread still running would write into whatever reuses the descriptor
                pump.done.close()
    cmd = [describe(producer, consumer)]
    if timed_out:
        detail = '; '.join(f'{r.name}: {r.stderr.strip()}' for r in results if r.stderr.strip())
        raise PipelineError(cmd, -9, f'stream did not finish within {timeout:g} seconds and was stopped. {detail}'.strip(),
                            'timeout', results)
    bad = culprit(results)
    if bad is not None:
        raise PipelineError(bad.argv, t.cast(int, bad.rc), bad.stderr, bad.name, results)
    if pump.error:
        raise PipelineError(cmd, -1, pump.error, 'pipeline', results)
    return PipelineResult(pump.bytes, seconds, results)
