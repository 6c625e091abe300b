# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import PipelineError, run_pipeline
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import LocalSegment, SshOptions, Stage
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._signals import interrupts_raise
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_openssh import OpenSshTransport, reap_stale_control_dirs
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Interrupted, ZfsCommandError

# Stands in for ssh: logs its argv, pretends to start/stop a master, and runs
# the command line through a shell the way sshd does on the remote side.
FAKE_SSH = '''\
import json, os, socket, sys
args = sys.argv[1:]
with open(os.environ['FAKE_SSH_LOG'], 'a') as log:
    log.write(json.dumps(args) + '\\n')
if os.environ.get('FAKE_SSH_FAIL'):
    sys.stderr.write('Host key verification failed.\\n')
    sys.exit(255)
takes_value = {'-o', '-p', '-l', '-i', '-F', '-O', '-S', '-c'}
i = 0
control = None
path = None
while i < len(args):
    if args[i] == '--':
        i += 1
        break
    if args[i] in takes_value:
        if args[i] == '-O':
            control = args[i + 1]
        if args[i] == '-o' and args[i + 1].startswith('ControlPath='):
            path = args[i + 1].split('=', 1)[1].replace('%C', 'c0ffee' * 6 + 'c0ff')
        i += 2
        continue
    if args[i].startswith('-'):
        i += 1
        continue
    break
if control:
    # like `ssh -O exit`: ask the master over its socket
    if control == 'exit' and path and os.path.exists(path):
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.sendall(b'exit')
        client.recv(1)
    sys.exit(0)
if '-N' in args[:i]:
    # a master in the foreground: listen on the control socket (bound under a temporary
    # name, then renamed, as ssh does) until told to exit or killed
    if os.environ.get('FAKE_SSH_MASTER_PID'):
        with open(os.environ['FAKE_SSH_MASTER_PID'], 'w') as out:
            out.write(str(os.getpid()))
    if os.environ.get('FAKE_SSH_MASTER_HANG'):
        import time
        time.sleep(3600)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path + '.tmp')
    server.listen(1)
    os.rename(path + '.tmp', path)
    conn, _ = server.accept()
    conn.recv(16)
    os.unlink(path)
    conn.close()
    sys.exit(0)
command = ' '.join(args[i + 1:])
os.execvp('sh', ['sh', '-c', command])
'''


@pytest.fixture
def fake_ssh(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, pathlib.Path]:
    script = tmp_path / 'ssh'
    script.write_text(f'#!{sys.executable}\n' + FAKE_SSH)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / 'ssh.log'
    monkeypatch.setenv('FAKE_SSH_LOG', str(log))
    return str(script), log


def calls(log: pathlib.Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def options_of(argv: list[str]) -> dict[str, str]:
    out = {}
    for flag, value in zip(argv, argv[1:]):
        if flag == '-o':
            key, _eq, val = value.partition('=')
            out[key] = val
    return out


def test_option_set_verifies_host_keys() -> None:
    options = SshOptions(user='zfsrecv', port=2222, identity_file='/etc/pyzfsautosnap/id_ed25519',
                         known_hosts_file='/etc/pyzfsautosnap/known_hosts', config_file='/etc/pyzfsautosnap/ssh_config')
    transport = OpenSshTransport('backup.example.org', options)
    argv = transport.ssh_argv('zfs list')
    opts = options_of(argv)
    assert opts['StrictHostKeyChecking'] == 'yes'
    assert opts['BatchMode'] == 'yes'
    assert opts['UserKnownHostsFile'] == '/etc/pyzfsautosnap/known_hosts'
    assert opts['IdentitiesOnly'] == 'yes'
    joined = ' '.join(argv).lower()
    assert 'accept-new' not in joined and 'stricthostkeychecking=no' not in joined
    assert 'userknownhostsfile=/dev/null' not in joined
    assert argv[argv.index('-p') + 1] == '2222'
    assert argv[argv.index('-l') + 1] == 'zfsrecv'
    assert argv[argv.index('-i') + 1] == '/etc/pyzfsautosnap/id_ed25519'
    assert argv[argv.index('-F') + 1] == '/etc/pyzfsautosnap/ssh_config'
    # the host comes after '--' so it is never read as an option; the command is one argument
    assert argv[-3:] == ['--', 'backup.example.org', 'zfs list']
    assert '-T' in argv and '-a' in argv and '-x' in argv
    assert 'ControlPath' not in opts


def test_one_master_for_the_whole_run(fake_ssh: tuple[str, pathlib.Path]) -> None:
    ssh, log = fake_ssh
    transport = OpenSshTransport('backup', ssh=ssh)
    with transport:
        control_dir = transport.control_dir
        assert control_dir is not None and os.path.isdir(control_dir)
        assert stat.S_IMODE(os.stat(control_dir).st_mode) == 0o700
        transport.runner().run(['true'])
        transport.runner().run(['true'])
    master, first, second, exit_ = calls(log)
    m_opts = options_of(master)
    # the master stays our child: in the foreground, never persisting after us
    assert m_opts['ControlMaster'] == 'yes' and m_opts['ControlPersist'] == 'no'
    assert m_opts['ControlPath'] == os.path.join(control_dir, '%C')
    assert '-f' not in master and '-N' in master
    for client in (first, second):
        c_opts = options_of(client)
        assert c_opts['ControlMaster'] == 'no' and c_opts['ControlPath'] == m_opts['ControlPath']
        assert c_opts['StrictHostKeyChecking'] == 'yes'
    assert exit_[exit_.index('-O') + 1] == 'exit'
    assert not os.path.exists(control_dir)


def test_master_failure_is_an_ssh_error(fake_ssh: tuple[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = fake_ssh[0]
    monkeypatch.setenv('FAKE_SSH_FAIL', '1')
    transport = OpenSshTransport('backup', ssh=ssh)
    with pytest.raises(ZfsCommandError) as info:
        transport.open()
    assert info.value.stage == 'ssh' and info.value.rc == 255
    assert 'Host key verification failed' in info.value.stderr
    assert transport.control_dir is None


def test_runner(fake_ssh: tuple[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ssh, log = fake_ssh
    transport = OpenSshTransport('backup', ssh=ssh)
    runner = transport.runner()
    result = runner.run(['printf', '%s', 'tank/a b; echo pwned'])
    assert result.stdout == 'tank/a b; echo pwned' and result.rc == 0
    assert result.argv == ['printf', '%s', 'tank/a b; echo pwned']
    with pytest.raises(ZfsCommandError) as info:
        runner.run(['sh', '-c', 'echo "cannot open \'x\': dataset does not exist" >&2; exit 1'])
    assert info.value.stage == 'zfs' and info.value.rc == 1 and 'does not exist' in info.value.stderr
    assert runner.run(['false'], check=False).rc == 1
    monkeypatch.setenv('FAKE_SSH_FAIL', '1')
    with pytest.raises(ZfsCommandError) as info:
        runner.run(['true'], check=False)
    assert info.value.stage == 'ssh'
    assert len(runner.calls) == 4
    assert calls(log)[0][-1] == "env LC_ALL=C printf %s 'tank/a b; echo pwned'"


def test_stream_through_ssh(fake_ssh: tuple[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    ssh = fake_ssh[0]
    payload = tmp_path / 'in.bin'
    payload.write_bytes(os.urandom(1024 * 1024))
    out = tmp_path / "out dir; touch pwned"
    out.mkdir()
    target = out / 'out.bin'
    with OpenSshTransport('backup', ssh=ssh) as transport:
        consumer = transport.segment([Stage('decompress', ('gzip', '-d', '-c')), Stage('mbuffer', ('cat',)),
                                      Stage('receive', ('dd', f'of={target}', 'status=none'))])
        assert isinstance(consumer, LocalSegment) and consumer.stages[0].name == 'ssh'
        producer = LocalSegment([Stage('send', ('cat', str(payload))), Stage('compress', ('gzip', '-1', '-c'))])
        result = run_pipeline(producer, consumer)
    assert target.read_bytes() == payload.read_bytes()
    assert [s.name for s in result.stages] == ['send', 'compress', 'decompress', 'mbuffer', 'receive']
    assert not (tmp_path / 'pwned').exists()


def test_remote_failure_through_ssh(fake_ssh: tuple[str, pathlib.Path]) -> None:
    ssh = fake_ssh[0]
    with OpenSshTransport('backup', ssh=ssh) as transport:
        consumer = transport.segment([Stage('mbuffer', ('cat',)),
                                      Stage('receive', ('sh', '-c', 'head -c 100 >/dev/null; echo "cannot receive: out of space" >&2; exit 1'))])
        with pytest.raises(PipelineError) as info:
            run_pipeline(LocalSegment([Stage('send', ('yes',))]), consumer, timeout=30)
    assert info.value.stage == 'receive' and 'out of space' in info.value.stderr


def test_ssh_failure_during_a_stream(fake_ssh: tuple[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = fake_ssh[0]
    transport = OpenSshTransport('backup', ssh=ssh)
    consumer = transport.segment([Stage('receive', ('cat',))])
    monkeypatch.setenv('FAKE_SSH_FAIL', '1')
    with pytest.raises(PipelineError) as info:
        run_pipeline(LocalSegment([Stage('send', ('yes',))]), consumer, timeout=30)
    assert info.value.stage == 'ssh' and info.value.rc == 255


@pytest.mark.skipif(not shutil.which('ssh'), reason='no OpenSSH client')
def test_real_ssh_accepts_the_options(tmp_path: pathlib.Path) -> None:
    # `ssh -G` evaluates options and configuration without connecting
    known = tmp_path / 'known_hosts'
    known.write_text('')
    transport = OpenSshTransport('backup.example.org', SshOptions(user='zfsrecv', port=2222, known_hosts_file=str(known)))
    transport.control_dir = str(tmp_path)
    argv = transport.ssh_argv('true')
    out = subprocess.run([*argv[:-3], '-o', 'ControlPersist=300', '-G', '--', 'backup.example.org'],
                         capture_output=True, text=True, check=True).stdout
    settings = dict(line.split(' ', 1) for line in out.splitlines() if ' ' in line)
    assert settings['stricthostkeychecking'] == 'true'
    assert settings['batchmode'] == 'yes'
    assert settings['port'] == '2222' and settings['user'] == 'zfsrecv'
    assert settings['controlmaster'] == 'false'
    assert settings['userknownhostsfile'] == str(known)


# ------------------------------------------------------------------ process lifetime
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


def dead_pid() -> int:
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


def test_the_master_is_our_child_and_gone_after_close(fake_ssh: tuple[str, pathlib.Path]) -> None:
    with OpenSshTransport('backup', ssh=fake_ssh[0]) as transport:
        master = t.cast(subprocess.Popen, transport.master)
        assert master.poll() is None
        with open(f'/proc/{master.pid}/stat', encoding='ascii') as fh:
            assert int(fh.read().rsplit(')', 1)[1].split()[1]) == os.getpid()
        control_dir = t.cast(str, transport.control_dir)
        assert os.path.basename(control_dir).startswith(f'pzas-{os.getpid()}-')
    assert master.returncode is not None and not alive(master.pid)
    assert transport.master is None and not os.path.exists(control_dir)


def test_a_master_that_never_listens_is_stopped(fake_ssh: tuple[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv('FAKE_SSH_MASTER_HANG', '1')
    pid_file = tmp_path / 'master.pid'
    monkeypatch.setenv('FAKE_SSH_MASTER_PID', str(pid_file))
    transport = OpenSshTransport('backup', SshOptions(connect_timeout=1), ssh=fake_ssh[0])
    monkeypatch.setattr('ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_openssh.MASTER_GRACE', 0.5)

    def interrupt() -> None:
        wait_for(pid_file.exists)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=interrupt, daemon=True)
    with interrupts_raise(), pytest.raises(Interrupted):
        thread.start()
        transport.open()
    thread.join(5)
    assert not alive(int(pid_file.read_text()))
    assert transport.control_dir is None and transport.master is None


ENGINE = '''
import sys, time
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_openssh import OpenSshTransport
transport = OpenSshTransport('backup', ssh=sys.argv[1])
transport.open()
print(transport.master.pid, transport.control_dir, flush=True)
time.sleep(60)
'''


@pytest.fixture
def private_tmp() -> t.Iterator[str]:
    # short enough for a control socket, and only ours: any other engine would reap what a killed one left in /tmp
    path = tempfile.mkdtemp(prefix='pzt-', dir='/tmp')
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_master_dies_with_a_killed_engine(fake_ssh: tuple[str, pathlib.Path], private_tmp: str) -> None:
    env = {**os.environ, 'TMPDIR': private_tmp, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    engine = subprocess.Popen([sys.executable, '-c', ENGINE, fake_ssh[0]], stdout=subprocess.PIPE, env=env, text=True)
    try:
        pid, control_dir = t.cast(t.IO[str], engine.stdout).readline().split()
        assert alive(int(pid))
        engine.kill()
        engine.wait()
        assert wait_for(lambda: not alive(int(pid)))
        # what the killed engine left is reaped by the next one, and only then
        assert os.path.dirname(control_dir) == private_tmp
        assert os.path.isdir(control_dir)
        assert control_dir in reap_stale_control_dirs([os.path.dirname(control_dir)])
        assert not os.path.exists(control_dir)
    finally:
        engine.kill()
        engine.wait()
        t.cast(t.IO[str], engine.stdout).close()


def test_only_stale_control_dirs_are_reaped(tmp_path: pathlib.Path) -> None:
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        made = {
            'dead': tmp_path / f'pzas-{dead_pid()}-abc_12',
            'live': tmp_path / f'pzas-{sleeper.pid}-def34',
            'ours': tmp_path / f'pzas-{os.getpid()}-gh56',
            'init': tmp_path / 'pzas-1-ij78',
            'unnamed': tmp_path / 'pzas-kl90',
            'bench': tmp_path / 'pzas-sshd-mn12',
        }
        for path in made.values():
            path.mkdir()
            (path / 'c0ffee').write_text('')
        not_a_dir = tmp_path / f'pzas-{dead_pid()}-file'
        not_a_dir.write_text('')
        removed = reap_stale_control_dirs([str(tmp_path)])
        assert removed == [str(made['dead'])]
        assert not made['dead'].exists()
        assert all(made[k].is_dir() for k in ('live', 'ours', 'init', 'unnamed', 'bench'))
        assert not_a_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_open_reaps_stale_control_dirs(fake_ssh: tuple[str, pathlib.Path], tmp_path: pathlib.Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    parent = tmp_path / 'tmp'
    parent.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(parent))
    stale = parent / f'pzas-{dead_pid()}-abc'
    stale.mkdir()
    live = parent / f'pzas-{os.getppid()}-def'
    live.mkdir()
    with OpenSshTransport('backup', ssh=fake_ssh[0]):
        pass
    assert not stale.exists() and live.is_dir()
