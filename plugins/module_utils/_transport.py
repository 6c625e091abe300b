# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How the engine reaches a host: one interface, a local and two SSH implementations.

A transport gives a :class:`Runner` for its host (so ``Zfs(transport.runner())``
works remotely) and turns a list of pipeline stages into a *segment* the
pipeline can run: processes on this host connected by pipes (local, or the
``ssh`` client running the stages remotely), or a paramiko channel.

Whatever runs on another host travels as one command line built from argv
lists with :func:`shlex.quote`; nothing user-supplied is ever interpolated
unquoted.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing as t

from ._types import ValidationError

# Markers the remote script prints on stderr: which stage ended with which rc.
RC_MARKER = '@pyzfsautosnap-rc'
_MARKER_RE = re.compile(r'^' + re.escape(RC_MARKER) + r' (\d+) (\d+)$')

_HOST_RE = re.compile(r'^[A-Za-z0-9_.:%\[\]-]+$')
_USER_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')

TRANSPORTS = ('auto', 'openssh', 'paramiko')


@dataclasses.dataclass(frozen=True)
class Stage:
    """One program of a pipeline; *remote* lists the programs a transport stage runs on another host."""

    name: str
    argv: tuple[str, ...]
    remote: tuple[Stage, ...] = ()


class RemoteProcess(t.Protocol):
    """A command started on another host with its stdin, stdout and stderr as streams."""

    command: str

    def read(self, size: int) -> bytes:
        ...

    def write(self, data: bytes) -> None:
        ...

    def close_stdin(self) -> None:
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        ...

    def stderr_text(self) -> str:
        ...

    def kill(self) -> None:
        ...


@dataclasses.dataclass
class LocalSegment:
    """Processes on this host, each one's stdout piped into the next one's stdin."""

    stages: list[Stage]


@dataclasses.dataclass
class ChannelSegment:
    """Stages run on another host behind one channel (paramiko)."""

    stages: list[Stage]
    start: t.Callable[[], RemoteProcess]
    host: str


Segment = t.Union[LocalSegment, ChannelSegment]


class Transport:
    """Interface of all transports; also a context manager that opens and closes connections."""

    kind = 'abstract'
    host: str | None = None

    def open(self) -> None:
        """Connect ahead of use; runners also work (slower) without it."""

    def close(self) -> None:
        """Drop connections and temporary files."""

    def runner(self) -> t.Any:
        raise NotImplementedError

    def segment(self, stages: t.Sequence[Stage]) -> Segment:
        raise NotImplementedError

    def describe(self) -> str:
        return self.host or 'localhost'

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class SshOptions:
    """What a user may say about an SSH connection; everything else comes from ssh_config."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts_file: str | None = None
    config_file: str | None = None
    connect_timeout: int = 30


def validate_host(host: str) -> str:
    # a leading '-' would be read by ssh as an option
    if not isinstance(host, str) or not host or host.startswith('-') or not _HOST_RE.fullmatch(host):
        raise ValidationError(f'host {host!r} must be a host name, an address or an ssh_config alias')
    return host


def validate_ssh_options(opts: SshOptions) -> SshOptions:
    if opts.user is not None and not _USER_RE.fullmatch(opts.user):
        raise ValidationError(f'ssh_user {opts.user!r} is not a valid user name')
    if opts.port is not None and not (isinstance(opts.port, int) and 0 < opts.port < 65536):
        raise ValidationError(f'ssh_port must be between 1 and 65535, got {opts.port!r}')
    for what in ('identity_file', 'known_hosts_file', 'config_file'):
        value = getattr(opts, what)
        # ssh -o parses its argument like a config line: whitespace or quotes would split it
        if value is not None and (not value or re.search(r'[\s"\'\\]', value) or value.startswith('-')):
            raise ValidationError(f'ssh_{what} {value!r} must be a path without whitespace or quotes')
    return opts


def quote_argv(argv: t.Sequence[str]) -> str:
    return ' '.join(shlex.quote(str(a)) for a in argv)


def remote_command(argv: t.Sequence[str]) -> str:
    """One command for a remote shell; the C locale keeps zfs messages parseable."""
    return quote_argv(['env', 'LC_ALL=C', *argv])


def remote_script(stages: t.Sequence[Stage]) -> str:
    """The command line that runs *stages* as a pipeline on another host.

    The login shell may be csh or fish, so a pipeline is handed to ``sh -c``.
    Every stage but the last reports its exit status on stderr (the last one's
    is the exit status of the whole command), so a failure is pinned on the
    stage that failed rather than on ssh.
    """
    if len(stages) == 1:
        return remote_command(stages[0].argv)
    parts = []
    for index, stage in enumerate(stages):
        cmd = quote_argv(stage.argv)
        if index < len(stages) - 1:
            cmd = f'{{ {cmd}; echo "{RC_MARKER} {index} $?" >&2; }}'
        parts.append(cmd)
    script = 'LC_ALL=C; export LC_ALL; ' + ' | '.join(parts)
    return quote_argv(['sh', '-c', script])


def split_markers(stderr: str) -> tuple[dict[int, int], str]:
    """Exit statuses reported by :func:`remote_script` and the stderr without the markers."""
    codes: dict[int, int] = {}
    lines = []
    for line in stderr.splitlines(keepends=True):
        match = _MARKER_RE.match(line.strip())
        if match:
            codes[int(match.group(1))] = int(match.group(2))
        else:
            lines.append(line)
    return codes, ''.join(lines)


def which_argv(tool: str) -> list[str]:
    """argv that succeeds when *tool* is on PATH; the name is an argument, never part of the script."""
    return ['sh', '-c', 'command -v "$1"', 'sh', tool]
