# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import typing as t

import pytest

paramiko = pytest.importorskip('paramiko')

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import PipelineError, run_pipeline  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import (  # noqa: E402
    ChannelSegment,
    LocalSegment,
    SshOptions,
    Stage,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_paramiko import (  # noqa: E402
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    ChannelProcess,
    ParamikoTransport,
    make_tuned_transport,
    preferred_ciphers,
    resolve_host,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_openssh import (  # noqa: E402
    OpenSshTransport,
    reap_stale_control_dirs,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError, ZfsCommandError  # noqa: E402

SSH_CONFIG = '''\
Host backup
    HostName backup.example.org
    Port 2222
    User zfsrecv
    IdentityFile ~/.ssh/id_backup
    UserKnownHostsFile ~/.ssh/known_hosts_backup ~/.ssh/known_hosts2

Host jumpy
    ProxyJump bastion

Host proxied
    ProxyCommand nc -X connect -x proxy:3128 %h %p
'''


# ------------------------------------------------------------------ ssh_config
def test_resolve_from_ssh_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('HOME', '/home/op')
    resolved = resolve_host('backup', SshOptions(), SSH_CONFIG)
    assert resolved.hostname == 'backup.example.org' and resolved.port == 2222 and resolved.user == 'zfsrecv'
    assert resolved.key_filenames == ('/home/op/.ssh/id_backup',)
    assert resolved.known_hosts == ('/home/op/.ssh/known_hosts_backup', '/home/op/.ssh/known_hosts2')
    assert resolved.proxy_command is None


def test_options_win_over_ssh_config() -> None:
    opts = SshOptions(user='root', port=22, identity_file='/etc/k', known_hosts_file='/etc/kh')
    resolved = resolve_host('backup', opts, SSH_CONFIG)
    assert (resolved.user, resolved.port, resolved.key_filenames, resolved.known_hosts) == ('root', 22, ('/etc/k',), ('/etc/kh',))


def test_resolve_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('HOME', '/home/op')
    resolved = resolve_host('other.example.org', SshOptions(), None)
    assert (resolved.hostname, resolved.port, resolved.user) == ('other.example.org', 22, None)
    assert resolved.known_hosts == ('/home/op/.ssh/known_hosts',)
    assert resolve_host('proxied', SshOptions(), SSH_CONFIG).proxy_command == 'nc -X connect -x proxy:3128 proxied 22'


def test_proxyjump_is_refused() -> None:
    with pytest.raises(ValidationError, match='ProxyJump'):
        resolve_host('jumpy', SshOptions(), SSH_CONFIG)


# ------------------------------------------------------------------ connection setup
class RecordingClient:
    """Stands in for SSHClient, recording how it was set up."""

    def __init__(self) -> None:
        self.policy: t.Any = None
        self.host_keys: list[str] = []
        self.connected: dict[str, t.Any] = {}

    def load_system_host_keys(self, path: str) -> None:
        self.host_keys.append(path)

    def set_missing_host_key_policy(self, policy: t.Any) -> None:
        self.policy = policy

    def connect(self, hostname: str, port: int = 22, username: str | None = None, *, transport_factory: t.Any = None,
                **kwargs: t.Any) -> None:
        self.connected = dict(kwargs, hostname=hostname, port=port, username=username, transport_factory=transport_factory)

    def get_transport(self) -> t.Any:
        return type('T', (), {'set_keepalive': lambda self, n: None})()

    def close(self) -> None:
        pass


def test_unknown_host_keys_are_rejected(tmp_path: pathlib.Path) -> None:
    known = tmp_path / 'known_hosts'
    known.write_text('')
    client = RecordingClient()
    transport = ParamikoTransport('backup', SshOptions(known_hosts_file=str(known), config_file=str(tmp_path / 'none')),
                                  client_factory=lambda: client)
    with pytest.raises(ValidationError):
        transport.open()  # the config file given does not exist
    transport = ParamikoTransport('backup', SshOptions(known_hosts_file=str(known)), client_factory=lambda: client)
    transport.open()
    assert isinstance(client.policy, paramiko.RejectPolicy)
    assert not isinstance(client.policy, (paramiko.AutoAddPolicy, paramiko.WarningPolicy))
    assert client.host_keys == [str(known)]
    assert client.connected['transport_factory'] is make_tuned_transport


def test_missing_known_hosts_is_an_error(tmp_path: pathlib.Path) -> None:
    transport = ParamikoTransport('backup', SshOptions(known_hosts_file=str(tmp_path / 'nope')), client_factory=RecordingClient)
    with pytest.raises(ValidationError, match='known_hosts'):
        transport.open()


def test_tuned_transport() -> None:
    assert preferred_ciphers(('aes128-ctr', 'aes256-gcm@openssh.com', 'aes128-gcm@openssh.com', '3des-cbc'))[:2] == (
        'aes128-gcm@openssh.com', 'aes256-gcm@openssh.com')
    assert preferred_ciphers(('aes256-ctr', 'aes128-ctr')) == ('aes128-ctr', 'aes256-ctr')
    left, right = socket.socketpair()
    try:
        transport = make_tuned_transport(left)
        assert transport.default_window_size == WINDOW_SIZE
        assert transport.default_max_packet_size == MAX_PACKET_SIZE
        if 'aes128-gcm@openssh.com' in paramiko.Transport._preferred_ciphers:
            assert transport.get_security_options().ciphers[0] == 'aes128-gcm@openssh.com'
    finally:
        left.close()
        right.close()


class FakeChannel:
    def __init__(self, stdout: bytes, stderr: bytes, rc: int) -> None:
        self.stdout = [stdout, b'']
        self.stderr = [stderr, b'']
        self.rc = rc
        self.command = ''
        self.sent = b''
        self.shut = False
        self.closed = False
        self.status_event = threading.Event()
        self.status_event.set()

    def exec_command(self, command: str) -> None:
        self.command = command

    def recv(self, size: int) -> bytes:
        return self.stdout.pop(0) if self.stdout else b''

    def recv_stderr(self, size: int) -> bytes:
        return self.stderr.pop(0) if self.stderr else b''

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        self.shut = True

    def recv_exit_status(self) -> int:
        return self.rc

    def close(self) -> None:
        self.closed = True


def test_channel_process() -> None:
    chan = FakeChannel(b'out', b'err', 3)
    proc = ChannelProcess(chan, 'env LC_ALL=C zfs list')
    proc.write(b'in')
    proc.close_stdin()
    assert (proc.read(10), proc.read(10)) == (b'out', b'')
    assert proc.wait(1) == 3
    assert proc.stderr_text() == 'err'
    assert chan.command == 'env LC_ALL=C zfs list' and chan.sent == b'in' and chan.shut
    proc.kill()
    assert chan.closed


# ------------------------------------------------------------------ against a real SSH server (paramiko's)
class ExecServer(paramiko.ServerInterface):
    """An SSH server that runs exec requests with sh, like sshd; only the given client key gets in."""

    def __init__(self, client_key: t.Any) -> None:
        self.client_key = client_key
        self.commands: list[str] = []

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == 'session' else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username: str) -> str:
        return 'publickey'

    def check_auth_publickey(self, username: str, key: t.Any) -> int:
        return paramiko.AUTH_SUCCESSFUL if key == self.client_key else paramiko.AUTH_FAILED

    def check_channel_exec_request(self, channel: t.Any, command: bytes) -> bool:
        self.commands.append(command.decode())
        threading.Thread(target=self._run, args=(channel, command.decode()), daemon=True).start()
        return True

    @staticmethod
    def _run(channel: t.Any, command: str) -> None:
        proc = subprocess.Popen(['sh', '-c', command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def feed() -> None:
            try:
                while True:
                    data = channel.recv(65536)
                    if not data:
                        break
                    proc.stdin.write(data)
                proc.stdin.close()
            except (OSError, EOFError):
                pass

        def errors() -> None:
            for chunk in iter(lambda: proc.stderr.read1(65536), b''):
                channel.sendall_stderr(chunk)

        threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=errors, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b''):
                channel.sendall(chunk)
        except (OSError, EOFError):
            proc.kill()
        rc = proc.wait()
        threads[1].join(5)
        # a command killed by a signal is reported the way a shell reports it (the status is unsigned)
        channel.send_exit_status(rc if rc >= 0 else 128 - rc)
        channel.close()


@pytest.fixture(scope='module')
def server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[dict[str, t.Any]]:
    tmp = tmp_path_factory.mktemp('sshd')
    host_key = paramiko.ECDSAKey.generate()
    client_key = paramiko.ECDSAKey.generate()
    client_key_path = tmp / 'id_ecdsa'
    client_key.write_private_key_file(str(client_key_path))
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    impl = ExecServer(client_key)
    transports: list[t.Any] = []

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()[0]
            except OSError:
                return
            try:
                transport = paramiko.Transport(conn)
                transport.add_server_key(host_key)
                transport.start_server(server=impl)
            except (OSError, EOFError, paramiko.SSHException):
                # a client that refused our host key hung up; keep serving the others
                continue
            transports.append(transport)

    threading.Thread(target=accept, daemon=True).start()
    known = tmp / 'known_hosts'
    known.write_text(f'[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n')
    wrong = tmp / 'known_hosts_wrong'
    other = paramiko.ECDSAKey.generate()
    wrong.write_text(f'[127.0.0.1]:{port} {other.get_name()} {other.get_base64()}\n')
    empty = tmp / 'known_hosts_empty'
    empty.write_text('')
    yield {'port': port, 'key': str(client_key_path), 'known': str(known), 'wrong': str(wrong), 'empty': str(empty),
           'impl': impl, 'tmp': tmp}
    listener.close()
    for transport in transports:
        transport.close()


def connect(server: dict[str, t.Any], known: str = 'known') -> ParamikoTransport:
    return ParamikoTransport('127.0.0.1', SshOptions(port=server['port'], identity_file=server['key'], known_hosts_file=server[known]))


@pytest.fixture(autouse=True)
def no_user_ssh_config(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('HOME', str(tmp_path))


@pytest.mark.parametrize('known, message', [('empty', 'not found in known_hosts'), ('wrong', 'BadHostKey')])
def test_server_key_must_be_known(server: dict[str, t.Any], known: str, message: str) -> None:
    transport = connect(server, known)
    with pytest.raises(ZfsCommandError) as info:
        transport.open()
    assert info.value.stage == 'ssh' and message in info.value.stderr
    assert transport.client is None


def test_runner_against_a_server(server: dict[str, t.Any]) -> None:
    with connect(server) as transport:
        runner = transport.runner()
        hostile = "tank/a b; echo pwned $(id)"
        result = runner.run(['printf', '%s', hostile])
        assert result.stdout == hostile and result.rc == 0
        assert server['impl'].commands[-1] == "env LC_ALL=C printf %s 'tank/a b; echo pwned $(id)'"
        with pytest.raises(ZfsCommandError) as info:
            runner.run(['sh', '-c', 'echo "cannot open \'x\': dataset does not exist" >&2; exit 1'])
        assert info.value.rc == 1 and 'does not exist' in info.value.stderr
        assert transport.client.get_transport().local_cipher == preferred_ciphers(paramiko.Transport._preferred_ciphers)[0]


def test_streams_against_a_server(server: dict[str, t.Any], tmp_path: pathlib.Path) -> None:
    payload = tmp_path / 'in.bin'
    payload.write_bytes(os.urandom(4 * 1024 * 1024 + 3))
    pushed = tmp_path / 'pushed.bin'
    pulled = tmp_path / 'pulled.bin'
    with connect(server) as transport:
        consumer = transport.segment([Stage('decompress', ('gzip', '-d', '-c')), Stage('mbuffer', ('cat',)),
                                      Stage('receive', ('dd', f'of={pushed}', 'status=none'))])
        assert isinstance(consumer, ChannelSegment)
        run_pipeline(LocalSegment([Stage('send', ('cat', str(payload))), Stage('compress', ('gzip', '-1', '-c'))]), consumer,
                     timeout=120)
        assert pushed.read_bytes() == payload.read_bytes()

        producer = transport.segment([Stage('send', ('cat', str(payload)))])
        result = run_pipeline(producer, LocalSegment([Stage('receive', ('dd', f'of={pulled}', 'status=none'))]), timeout=120)
        assert pulled.read_bytes() == payload.read_bytes()
        assert result.bytes == payload.stat().st_size

        failing = transport.segment([Stage('mbuffer', ('cat',)),
                                     Stage('receive', ('sh', '-c', 'head -c 100 >/dev/null; echo "cannot receive: out of space" >&2; exit 1'))])
        with pytest.raises(PipelineError) as info:
            run_pipeline(LocalSegment([Stage('send', ('cat', str(payload)))]), failing, timeout=120)
        assert info.value.stage == 'receive' and 'out of space' in info.value.stderr


# ------------------------------------------------------------------ the OpenSSH client against the same server
def ssh_processes(control_dir: str) -> list[int]:
    """Local ssh processes that use *control_dir* (the master and its clients)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as fh:
                argv = fh.read().split(b'\0')
            with open(f'/proc/{entry}/stat', encoding='ascii') as fh:
                zombie = fh.read().rsplit(')', 1)[1].split()[0] == 'Z'
        except OSError:
            continue
        if not zombie and any(control_dir.encode() in arg for arg in argv):
            found.append(int(entry))
    return found


@pytest.mark.skipif(not shutil.which('ssh') or not sys.platform.startswith('linux'), reason='needs the OpenSSH client on Linux')
def test_real_openssh_master_lives_and_dies_with_the_engine(server: dict[str, t.Any], tmp_path: pathlib.Path) -> None:
    options = SshOptions(port=server['port'], identity_file=server['key'], known_hosts_file=server['known'])
    with OpenSshTransport('127.0.0.1', options) as transport:
        control_dir = t.cast(str, transport.control_dir)
        master = t.cast(subprocess.Popen, transport.master)
        assert master.poll() is None
        assert transport.runner().run(['echo', 'over the master']).stdout == 'over the master\n'
        out = tmp_path / 'out.bin'
        payload = os.urandom(256 * 1024)
        (tmp_path / 'in.bin').write_bytes(payload)
        run_pipeline(LocalSegment([Stage('send', ('cat', str(tmp_path / 'in.bin')))]),
                     transport.segment([Stage('receive', ('dd', f'of={out}', 'status=none'))]))
        assert out.read_bytes() == payload
    assert master.returncode is not None and not os.path.exists(control_dir)
    assert not ssh_processes(control_dir)


ENGINE = '''
import sys, time
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import run_pipeline
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import LocalSegment, SshOptions, Stage
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_openssh import OpenSshTransport
transport = OpenSshTransport('127.0.0.1', SshOptions(port=int(sys.argv[1]), identity_file=sys.argv[2], known_hosts_file=sys.argv[3]))
transport.open()
print(transport.control_dir, flush=True)
run_pipeline(LocalSegment([Stage('send', ('yes',))]), transport.segment([Stage('receive', ('cat',))]))
'''


@pytest.mark.skipif(not shutil.which('ssh') or not sys.platform.startswith('linux'), reason='needs the OpenSSH client on Linux')
def test_real_openssh_processes_die_with_a_killed_engine(server: dict[str, t.Any]) -> None:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    engine = subprocess.Popen([sys.executable, '-c', ENGINE, str(server['port']), server['key'], server['known']],
                              stdout=subprocess.PIPE, env=env, text=True)
    try:
        control_dir = t.cast(t.IO[str], engine.stdout).readline().strip()
        deadline = time.monotonic() + 20
        while len(ssh_processes(control_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ssh_processes(control_dir)) >= 2, 'master and stream client did not start'
        engine.kill()
        engine.wait()
        deadline = time.monotonic() + 10
        while ssh_processes(control_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ssh_processes(control_dir), 'ssh outlived the killed engine'
        assert control_dir in reap_stale_control_dirs([os.path.dirname(control_dir)])
    finally:
        engine.kill()
        engine.wait()
        t.cast(t.IO[str], engine.stdout).close()
