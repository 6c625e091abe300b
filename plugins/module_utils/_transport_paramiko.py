# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Remote hosts through paramiko, for controllers without the ssh binary.

Host keys must already be in known_hosts: the missing-key policy is
:class:`paramiko.RejectPolicy`, and a changed key fails inside paramiko. The
connection is tuned for bulk streams: TCP_NODELAY (as OpenSSH), a large channel
window, AES-GCM first where paramiko offers it (fast with AES-NI), large reads,
and writes that hand paramiko a memoryview.

No local process is involved (except a ProxyCommand, which paramiko starts):
when the engine stops, :meth:`ParamikoTransport.close` closes every channel it
opened, and when it is killed the kernel closes the TCP connection, after which
sshd ends the remote commands' input.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import socket
import threading
import time
import typing as t

from ._transport import ChannelSegment, Segment, SshOptions, Stage, Transport, remote_command, remote_script
from ._types import ValidationError, ZfsCommandError
from ._zfs import CommandResult

_WAIT_POLL = 0.02

try:
    import paramiko
except ImportError:  # the engine must import on hosts without paramiko
    paramiko = None
HAS_PARAMIKO = paramiko is not None

WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 32 * 1024
READ_SIZE = 1024 * 1024
PREFERRED_CIPHERS = ('aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes256-ctr')
DEFAULT_CONFIG = '~/.ssh/config'
DEFAULT_KNOWN_HOSTS = ('~/.ssh/known_hosts',)


@dataclasses.dataclass(frozen=True)
class ResolvedHost:
    """Where and how to connect, after applying ssh_config and the user's options."""

    hostname: str
    port: int
    user: str | None
    key_filenames: tuple[str, ...]
    known_hosts: tuple[str, ...]
    proxy_command: str | None


def resolve_host(host: str, options: SshOptions, config_text: str | None) -> ResolvedHost:
    """Apply ``ssh_config`` like ssh would for the settings paramiko can honour; options win."""
    if paramiko is None:
        raise ValidationError('the paramiko Python library is not installed')
    entry = paramiko.SSHConfig.from_text(config_text).lookup(host) if config_text else {}
    if entry.get('proxyjump', 'none').lower() != 'none':
        raise ValidationError(f'ssh_config sets ProxyJump for {host}; paramiko cannot follow it, use transport: openssh')
    keys: t.Sequence[str]
    if options.identity_file:
        keys = [options.identity_file]
    else:
        keys = entry.get('identityfile', [])
    if options.known_hosts_file:
        known: t.Sequence[str] = [options.known_hosts_file]
    else:
        known = entry.get('userknownhostsfile', '').split() or DEFAULT_KNOWN_HOSTS
    proxy = entry.get('proxycommand')
    return ResolvedHost(
        hostname=entry.get('hostname', host),
        port=options.port or int(entry.get('port', 22)),
        user=options.user or entry.get('user'),
        key_filenames=tuple(os.path.expanduser(k) for k in keys),
        known_hosts=tuple(os.path.expanduser(k) for k in known),
        proxy_command=proxy if proxy and proxy.lower() != 'none' else None,
    )


def preferred_ciphers(available: t.Sequence[str]) -> tuple[str, ...]:
    first = [c for c in PREFERRED_CIPHERS if c in available]
    return tuple(first + [c for c in available if c not in first])


def no_delay(sock: t.Any) -> None:
    """TCP_NODELAY, as ssh and sshd set it: without it the tail of a packet that does not fill a
    segment waits for the peer's delayed ACK whenever the stream pauses (a full window, say)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def make_tuned_transport(sock: t.Any, **kwargs: t.Any) -> t.Any:
    """``transport_factory`` for SSHClient.connect: no Nagle, big window, AES-GCM preferred."""
    no_delay(sock)
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE, **kwargs)
    options = transport.get_security_options()
    options.ciphers = preferred_ciphers(options.ciphers)
    return transport


class ChannelProcess:
    """A remote command on its own channel; stderr is drained in the background so it never blocks."""

    def __init__(self, channel: t.Any, command: str) -> None:
        self.channel = channel
        self.command = command
        self._stderr = bytearray()
        channel.exec_command(command)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        while True:
            try:
                data = self.channel.recv_stderr(READ_SIZE)
            except (OSError, EOFError):
                return
            if not data:
                return
            self._stderr += data

    def read(self, size: int) -> bytes:
        return t.cast(bytes, self.channel.recv(size))

    def write(self, data: bytes) -> None:
        # sendall slices what is left after every packet: on bytes that copies the rest of a
        # 1 MiB chunk 32 times over, on a memoryview it copies nothing
        self.channel.sendall(memoryview(data))

    def close_stdin(self) -> None:
        self.channel.shutdown_write()

    def wait(self, timeout: float | None = None) -> int | None:
        # polled, not status_event.wait(): a signal can stop the engine only outside the threading module
        end = None if timeout is None else time.monotonic() + timeout
        while not self.channel.status_event.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            time.sleep(_WAIT_POLL if left is None else min(_WAIT_POLL, left))
        self._drain.join(5)
        return int(self.channel.recv_exit_status())

    def stderr_text(self) -> str:
        return bytes(self._stderr).decode('utf-8', 'replace')

    def kill(self) -> None:
        self.channel.close()


class ParamikoRunner:
    def __init__(self, transport: ParamikoTransport) -> None:
        self.transport = transport
        self.calls: list[list[str]] = []

    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        proc = self.transport.start(remote_command(argv))
        proc.close_stdin()
        out = bytearray()
        while True:
            chunk = proc.read(READ_SIZE)
            if not chunk:
                break
            out += chunk
        rc = proc.wait()
        result = CommandResult(argv, -1 if rc is None else rc, out.decode('utf-8', 'replace'), proc.stderr_text())
        if check and result.rc != 0:
            raise ZfsCommandError(argv, result.rc, result.stdout, result.stderr)
        return result


class ParamikoTransport(Transport):
    kind = 'paramiko'

    def __init__(self, host: str, options: SshOptions | None = None, client_factory: t.Callable[[], t.Any] | None = None) -> None:
        if paramiko is None:
            raise ValidationError('transport paramiko needs the paramiko Python library')
        self.host = host
        self.options = options or SshOptions()
        self.client_factory = client_factory or paramiko.SSHClient
        self.client: t.Any = None
        self._runner = ParamikoRunner(self)
        # channels still open, closed with the connection so that no remote command waits on them
        self.processes: list[ChannelProcess] = []

    def _config_text(self) -> str | None:
        path = os.path.expanduser(self.options.config_file or DEFAULT_CONFIG)
        if not os.path.exists(path):
            if self.options.config_file:
                raise ValidationError(f'ssh_config_file {path} does not exist')
            return None
        with open(path, encoding='utf-8') as handle:
            return handle.read()

    def resolved(self) -> ResolvedHost:
        return resolve_host(t.cast(str, self.host), self.options, self._config_text())

    def open(self) -> None:
        if self.client is not None:
            return
        target = self.resolved()
        client = self.client_factory()
        loaded = 0
        for path in target.known_hosts:
            if os.path.exists(path):
                client.load_system_host_keys(path)
                loaded += 1
        if not loaded:
            raise ValidationError(f'no known_hosts file found ({", ".join(target.known_hosts)}); '
                                  f'add the host key of {self.host} before replicating')
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kwargs: dict[str, t.Any] = {
            'port': target.port, 'username': target.user, 'timeout': self.options.connect_timeout,
            'banner_timeout': self.options.connect_timeout, 'auth_timeout': self.options.connect_timeout,
            'key_filename': list(target.key_filenames) or None, 'look_for_keys': not target.key_filenames,
        }
        if target.proxy_command:
            kwargs['sock'] = paramiko.ProxyCommand(target.proxy_command)
        if 'transport_factory' in inspect.signature(client.connect).parameters:
            kwargs['transport_factory'] = make_tuned_transport
        try:
            client.connect(target.hostname, **kwargs)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise ZfsCommandError(['ssh', t.cast(str, self.host)], 255, '', f'{type(exc).__name__}: {exc}', stage='ssh') from exc
        transport = client.get_transport()
        transport.set_keepalive(15)
        self.client = client

    def close(self) -> None:
        processes, self.processes = self.processes, []
        for proc in processes:
            try:
                proc.kill()
            except (OSError, EOFError):
                pass
        if self.client is not None:
            self.client.close()
            self.client = None

    def start(self, command: str) -> ChannelProcess:
        self.open()
        try:
            channel = self.client.get_transport().open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ZfsCommandError(['ssh', t.cast(str, self.host)], 255, '', f'{type(exc).__name__}: {exc}', stage='ssh') from exc
        try:
            proc = ChannelProcess(channel, command)
        except BaseException:
            channel.close()
            raise
        self.processes = [p for p in self.processes if not p.channel.closed]
        self.processes.append(proc)
        return proc

    def runner(self) -> ParamikoRunner:
        return self._runner

    def segment(self, stages: t.Sequence[Stage]) -> Segment:
        script = remote_script(stages)
        return ChannelSegment(list(stages), lambda: self.start(script), t.cast(str, self.host))
