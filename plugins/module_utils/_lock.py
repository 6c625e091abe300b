# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Per-key advisory locks (one file per key, ``flock``) so a timer run and an AWX run never interleave.

flock locks vanish with the process that holds them, so a crashed run never
leaves a stale lock behind; the files themselves stay (removing them would let
two runs lock two different inodes of the same path).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import typing as t

from ._types import ValidationError
from ._validate import validate_lock_key

DEFAULT_LOCK_DIR = '/run/lock'
DEFAULT_LOCK_TIMEOUT = 60.0
LOCK_FILE_PREFIX = 'pyzfsautosnap'


class LockTimeout(Exception):
    """Another run holds a lock for longer than we were told to wait."""

    def __init__(self, path: str, timeout: float, holder: str | None) -> None:
        self.path = path
        self.timeout = timeout
        self.holder = holder
        who = f' (held by pid {holder})' if holder else ' (held by a process whose pid is unknown)'
        super().__init__(f'could not take lock {path} within {timeout:g} seconds{who}; '
                         'another pyzfsautosnap run is working on this pool')


def lock_path(key: str, lock_dir: str = DEFAULT_LOCK_DIR, prefix: str = LOCK_FILE_PREFIX) -> str:
    return os.path.join(lock_dir, f'{prefix}.{validate_lock_key(key)}.lock')


def _holder(fd: int, proc_locks: str = '/proc/locks') -> str | None:
    """The pid of the process holding the flock on *fd*'s file, as the kernel reports it; None when unknown.

    The pid written into the file names the last pyzfsautosnap run that held
    the lock, not necessarily who holds it now (any process may flock the file).
    """
    try:
        st = os.fstat(fd)
        with open(proc_locks, encoding='ascii', errors='replace') as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    inode = f'{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}'
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters are listed as "1: -> FLOCK ..."
        fields = line.split()
        if len(fields) >= 6 and fields[1] == 'FLOCK' and fields[5] == inode and fields[4].isdigit() and fields[4] != '0':
            return fields[4]
    return None


def _acquire(path: str, deadline: float, timeout: float, poll: float) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o644)
    except OSError as exc:
        raise ValidationError(f'cannot open lock file {path}: {exc.strerror}; set lock_dir to a writable directory') from exc
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise LockTimeout(path, timeout, holder) from None
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            continue
        # for people reading the file; a waiting run asks the kernel who holds the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode('ascii'), 0)
        return fd


@contextlib.contextmanager
def locked(keys: t.Iterable[str], lock_dir: str = DEFAULT_LOCK_DIR, timeout: float = DEFAULT_LOCK_TIMEOUT,
           prefix: str = LOCK_FILE_PREFIX, poll: float = 0.1) -> t.Iterator[list[str]]:
    """Hold the locks of all *keys*, taken in sorted order so two runs cannot deadlock.

    *timeout* bounds the total wait; yields the lock file paths.
    """
    if timeout < 0:
        raise ValidationError(f'lock timeout must be >= 0, got {timeout}')
    paths = [lock_path(key, lock_dir, prefix) for key in sorted(set(keys))]
    if paths:
        try:
            os.makedirs(lock_dir, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise ValidationError(f'cannot create lock directory {lock_dir}: {exc.strerror}') from exc
    deadline = time.monotonic() + timeout
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(_acquire(path, deadline, timeout, poll))
        yield paths
    finally:
        for fd in reversed(fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
