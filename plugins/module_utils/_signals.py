# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Stopping on a signal, and child processes that never outlive the engine.

SIGTERM (a job cancel, ``systemctl stop``), SIGINT (Ctrl-C) and SIGHUP (the
terminal went away) become :class:`Interrupted` raised in the main thread
while :func:`interrupts_raise` is active, so every ``with`` and ``finally`` on
the way out runs: streams stop their stages, transports close their
connections, locks are released. A signal that arrives while the main thread is
inside the threading module, where an exception would leave a lock in a state
it cannot recover from, is raised a moment later, once it is out of it (the
engine's own waits poll for that reason). Only the first signal raises; later ones are
ignored so that they cannot cut that clean-up in half, and code that must run
to its end even when the first one arrives (stopping a stream's stages) runs
under :func:`deferred`, which holds the signal back until it is done.

The exit status of a run that was stopped by signal N is ``128 + N`` (143 for
SIGTERM, 130 for SIGINT, 129 for SIGHUP), as a shell reports it.

A SIGKILL cannot be caught. :func:`die_with_parent` makes the kernel send
SIGTERM to a child when the engine dies (``PR_SET_PDEATHSIG``), so that no
``ssh`` keeps a connection or a stream alive for a dead run. Linux ties that
signal to the *thread* that started the child: processes that must live as
long as the run are started from the main thread (or a thread that lives as
long as they must), never from a short-lived worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import types
import typing as t

from ._types import Interrupted

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ('SIGTERM', 'SIGINT', 'SIGHUP') if hasattr(signal, name))

# linux/prctl.h
_PR_SET_PDEATHSIG = 1


class _State:
    """What the handler knows; it only ever runs in the main thread."""

    installed = 0
    raised: int | None = None
    pending: int | None = None
    deferring = 0


_state = _State()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f'signal {signum}'


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by *signum*, as a shell reports a process killed by it."""
    return 128 + signum


# Where an exception raised by a handler corrupts the interpreter's own state: a Condition
# interrupted between its lock's release and re-acquire ends in "release unlocked lock".
_UNSAFE_FILES = frozenset(f for f in (getattr(threading, '__file__', None),) if f)
# how soon a signal that arrived at such a point is tried again
RETRY_INTERVAL = 0.02


def _unsafe(frame: types.FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename in _UNSAFE_FILES:
            return True
        frame = frame.f_back
    return False


def _raise_or_retry(signum: int, frame: types.FrameType | None) -> None:
    if _unsafe(frame):
        _state.pending = signum
        signal.setitimer(signal.ITIMER_REAL, RETRY_INTERVAL)
        return
    _state.pending = None
    _state.raised = signum
    raise Interrupted(signum)


def _handler(signum: int, frame: types.FrameType | None) -> None:
    if _state.raised is not None:
        # already stopping: a second Ctrl-C must not abandon stages half stopped
        return
    if _state.deferring:
        if _state.pending is None:
            _state.pending = signum
        return
    if _state.pending is not None:
        # the first one is waiting for a safe point already
        return
    _raise_or_retry(signum, frame)


def _retry(_alarm: int, frame: types.FrameType | None) -> None:
    signum = _state.pending
    if signum is None or _state.raised is not None or _state.deferring:
        # nothing held back, or deferred() raises it when its block ends
        return
    _raise_or_retry(signum, frame)


@contextlib.contextmanager
def interrupts_raise(signals: t.Sequence[int] = SIGNALS) -> t.Iterator[None]:
    """Turn *signals* into :class:`Interrupted` in the main thread; the previous handlers come back after.

    Outside the main thread Python cannot install handlers: then this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (*signals, signal.SIGALRM)}
    for signum in signals:
        signal.signal(signum, _handler)
    signal.signal(signal.SIGALRM, _retry)
    _state.installed += 1
    try:
        yield
    finally:
        _state.installed -= 1
        if not _state.installed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if not _state.installed:
            _state.raised = None
            _state.pending = None


@contextlib.contextmanager
def deferred() -> t.Iterator[None]:
    """Hold a signal back while the block runs; raise :class:`Interrupted` for it at the end.

    For clean-up that a signal arriving half way would leave half done.
    """
    if threading.current_thread() is not threading.main_thread():
        # handlers run only in the main thread: nothing to hold back here
        yield
        return
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        signum = _state.pending
        if not _state.deferring and signum is not None:
            _state.pending = None
            if _state.raised is None and _state.installed:
                _state.raised = signum
                raise Interrupted(signum)


class Flag:
    """A one-way flag that a thread sets and the main thread can wait for where a signal may raise.

    threading.Event waits inside the threading module, where a signal is held back until the wait
    ends; this one waits in ``select``, which a signal cuts short cleanly.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            with contextlib.suppress(OSError):
                os.write(self._write, b'.')

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None) -> bool:
        if not self._set:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._read], [], [], timeout)
        return self._set

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def interrupted_result(signum: int, dataset: str | None = None) -> dict[str, t.Any]:
    """The result of a run an :class:`Interrupted` ended before anything reported it."""
    name = signal_name(signum)
    info: dict[str, t.Any] = {'signal': name}
    where = ''
    if dataset:
        info['dataset'] = dataset
        where = f' while replicating {dataset}'
    return {'failed': True, 'changed': False, 'interrupted': info,
            'msg': f'interrupted by {name}{where}; every stage stopped, resumable state kept'}


def interrupted_signal(result: t.Mapping[str, t.Any]) -> int | None:
    """The signal number a result says the run was interrupted by, else None."""
    info = result.get('interrupted')
    if not isinstance(info, t.Mapping):
        return None
    name = info.get('signal')
    if isinstance(name, int):
        return name
    if isinstance(name, str):
        try:
            return int(signal.Signals[name])
        except KeyError:
            return int(signal.SIGTERM)
    return int(signal.SIGTERM)


# ------------------------------------------------------------------ parent death
def _load_prctl() -> t.Any:
    if not sys.platform.startswith('linux'):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    return prctl


# looked up once, in the parent: the child between fork and exec should only make the call
_PRCTL = _load_prctl()


def die_with_parent(signum: int = signal.SIGTERM) -> t.Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send *signum* to the child when its parent thread ends.

    None where the platform has no ``PR_SET_PDEATHSIG`` (then children merely may outlive a
    killed engine). SIGTERM rather than SIGKILL lets ssh tidy up its connection.
    """
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL
    arg = ctypes.c_ulong(int(signum))
    zero = ctypes.c_ulong(0)

    def preexec() -> None:
        prctl(ctypes.c_int(_PR_SET_PDEATHSIG), arg, zero, zero, zero)
        # the parent may have died between fork and prctl: then nobody would send the signal
        if os.getppid() != parent:
            os.kill(os.getpid(), int(signum))

    return preexec
