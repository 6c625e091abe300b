# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A client of a qemu human monitor on a unix socket: enough to stop, save, restore and resume a guest."""

from __future__ import annotations

import os
import socket
import time

PROMPT = b'(qemu) '


class MonitorError(RuntimeError):
    pass


def command(path: str, line: str, timeout: float = 30.0) -> str:
    """Send one monitor command and return what qemu answered before its next prompt."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise MonitorError(f'no monitor socket at {path}')
        time.sleep(0.1)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            _read_prompt(sock, deadline)
            sock.sendall(line.encode() + b'\n')
            return _read_prompt(sock, deadline).decode('utf-8', 'replace')
        except OSError as exc:
            raise MonitorError(f'monitor {path}: {line!r}: {exc}') from exc


def _read_prompt(sock: socket.socket, deadline: float) -> bytes:
    buf = b''
    while not buf.endswith(PROMPT):
        if time.monotonic() > deadline:
            raise MonitorError(f'no prompt from the monitor within its time: {buf[-200:]!r}')
        chunk = sock.recv(65536)
        if not chunk:
            raise MonitorError(f'the monitor closed: {buf[-200:]!r}')
        buf += chunk
    return buf


def wait_migration(path: str, timeout: float) -> None:
    """Wait until the outgoing or incoming migration of the monitor's guest has completed."""
    deadline = time.monotonic() + timeout
    while True:
        status = command(path, 'info migrate', timeout=max(1.0, deadline - time.monotonic()))
        if 'Migration status: completed' in status:
            return
        if 'Migration status: failed' in status or 'Migration status: cancelled' in status:
            raise MonitorError(f'migration failed: {status[-500:]}')
        if time.monotonic() > deadline:
            raise MonitorError(f'migration did not complete within {timeout:.0f}s: {status[-500:]}')
        time.sleep(0.2)
