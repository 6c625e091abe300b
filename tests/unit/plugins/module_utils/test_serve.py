# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The forced command at work: what reaches zfs, what the client sees, what the server stamps and logs."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import syslog
import textwrap

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _cli
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import mbuffer_argv, receiver_stages
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._serve import Server
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import (
    remote_command, remote_script, split_markers, which_argv)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import (
    STAMP_PROPERTY, CommandResult, estimate_argv, receive_argv, send_argv)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import Zfs

ROOTS = ['zfsbackups/c1']
TARGET = 'zfsbackups/c1/tank/home'
NOW = 1_800_000_000


class Runner:
    """Answers zfs argv (without the zfs path) by prefix; records every call."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.calls = []

    def run(self, argv, *, check=True):
        argv = [str(a) for a in argv]
        self.calls.append(argv[1:])
        for prefix, (rc, answer, err) in self.answers:
            if argv[1:1 + len(prefix)] == prefix:
                out = answer() if callable(answer) else answer
                if check and rc:
                    raise ZfsCommandError(argv, rc, out, err)
                return CommandResult(argv, rc, out, err)
        return CommandResult(argv, 0, '', '')


@pytest.fixture
def fake_zfs(tmp_path):
    """A `zfs` that records its argv and copies its stdin to a file, exiting with $FAKE_RC."""
    script = tmp_path / 'zfs'
    script.write_text(textwrap.dedent(f'''\
        #!{sys.executable}
        import json, os, sys
        with open({str(tmp_path / 'argv.json')!r}, 'w') as fh:
            json.dump(sys.argv[1:], fh)
        with open({str(tmp_path / 'stdin.bin')!r}, 'wb') as fh:
            fh.write(sys.stdin.buffer.read())
        sys.stderr.write('fake zfs done\\n')
        sys.exit(int(os.environ.get('FAKE_RC', '0')))
        '''))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tmp_path


class Session:
    """One SSH session's forced command: stdin and stdout as files, stderr and the log captured."""

    def __init__(self, tmp_path, runner, *, zfs_path='zfs', data=b'', mode='receive', roots=tuple(ROOTS)):
        self.stdin_path = tmp_path / 'in.bin'
        self.stdout_path = tmp_path / 'out.bin'
        self.stdin_path.write_bytes(data)
        self.stderr = io.StringIO()
        self.logged = []
        self.runner = runner
        self.roots = roots
        self.mode = mode
        self.zfs_path = zfs_path

    def __call__(self, command):
        with open(self.stdin_path, 'rb') as stdin, open(self.stdout_path, 'wb') as stdout:
            server = Server(self.roots, self.mode, zfs=Zfs(self.runner, self.zfs_path),
                            log=lambda prio, msg: self.logged.append((prio, msg)), stdin=stdin.fileno(),
                            stdout=stdout.fileno(), stderr=self.stderr, clock=lambda: NOW)
            return server.handle(command)

    @property
    def stdout(self):
        return self.stdout_path.read_bytes()


def tree(*rows):
    """A received_tree listing; rows without an arrival stamp get '-'."""
    return '\n'.join('\t'.join(r if len(r) == 5 else (*r, '-')) for r in rows) + '\n'


def test_a_receive_runs_with_every_inert_property_and_stamps_what_arrived(tmp_path, fake_zfs, capfd):
    before = tree((TARGET, 'filesystem', 'noauto', 'on'), (TARGET + '@a', 'snapshot', '-', '-'))
    after = tree((TARGET, 'filesystem', 'noauto', 'on'), (TARGET + '@a', 'snapshot', '-', '-'),
                 (TARGET + '@b', 'snapshot', '-', '-'), (TARGET + '@c', 'snapshot', '-', '-'))
    listings = iter([before, after])
    runner = Runner([(['list', '-H', '-p', '-r'], (0, lambda: next(listings), ''))])
    session = Session(tmp_path, runner, zfs_path=str(fake_zfs / 'zfs'), data=b'the stream')
    argv = receive_argv(TARGET, filesystem=True, rollback=False, properties={'org.example:x': '1'}, exclude=('atime',))
    command = remote_script(receiver_stages(argv, mbuffer=mbuffer_argv('16M', 30)))

    assert session(command) == 0
    assert (fake_zfs / 'stdin.bin').read_bytes() == b'the stream'
    received = json.loads((fake_zfs / 'argv.json').read_text())
    assert received[:4] == ['receive', '-s', '-u', '-o']
    assert received[-1] == TARGET
    for forced in ('readonly=on', 'canmount=noauto', 'exec=off', 'setuid=off', 'devices=off',
                   'com.sun:auto-snapshot=false', 'org.example:x=1'):
        assert forced in received
    for excluded in ('mountpoint', 'sharenfs', 'sharesmb', 'refreservation', 'atime'):
        assert received[received.index(excluded) - 1] == '-x'
    assert '-F' not in received
    # the client sees the stage statuses its own sh -c pipeline would have printed
    assert split_markers(session.stderr.getvalue())[0] == {0: 0}
    # each stage's own messages go straight to the session's stderr
    assert 'fake zfs done' in capfd.readouterr().err
    assert runner.calls[-1] == ['set', f'{STAMP_PROPERTY}={NOW}', TARGET + '@b', TARGET + '@c']


def test_a_stream_that_leaves_a_mountable_or_writable_dataset_is_settled(tmp_path, fake_zfs):
    after = tree((TARGET, 'filesystem', 'on', 'on'), (TARGET + '/child', 'filesystem', 'on', 'off'),
                 (TARGET + '/vol', 'volume', '-', 'off'), (TARGET + '@a', 'snapshot', '-', '-'))
    listings = iter(['', after])
    runner = Runner([(['list', '-H', '-p', '-r'], (0, lambda: next(listings), ''))])
    session = Session(tmp_path, runner, zfs_path=str(fake_zfs / 'zfs'))
    # claimed to be a volume, so no canmount was forced on the receive itself
    assert session(remote_command(receive_argv(TARGET, filesystem=False, rollback=False, properties={}))) == 0
    received = json.loads((fake_zfs / 'argv.json').read_text())
    assert 'canmount=noauto' not in received and 'exec=off' not in received and 'readonly=on' in received
    assert ['set', 'canmount=noauto', TARGET, TARGET + '/child'] in runner.calls
    assert ['set', 'readonly=on', TARGET + '/child', TARGET + '/vol'] in runner.calls
    assert runner.calls[-1] == ['set', f'{STAMP_PROPERTY}={NOW}', TARGET + '@a']


def test_a_failed_receive_is_reported_and_nothing_is_stamped(tmp_path, fake_zfs, monkeypatch):
    monkeypatch.setenv('FAKE_RC', '1')
    runner = Runner([(['list'], (1, '', f"cannot open '{TARGET}': dataset does not exist\n"))])
    session = Session(tmp_path, runner, zfs_path=str(fake_zfs / 'zfs'))
    command = remote_script(receiver_stages(receive_argv(TARGET, filesystem=True, rollback=False, properties={}),
                                            mbuffer=mbuffer_argv('16M', 30)))
    assert session(command) == 1
    assert not [c for c in runner.calls if c[0] == 'set']
    assert split_markers(session.stderr.getvalue())[0] == {0: 0}


def test_a_stream_cannot_back_date_the_arrival_of_what_was_there(tmp_path, fake_zfs):
    before = tree((TARGET, 'filesystem', 'noauto', 'on'), (TARGET + '@a', 'snapshot', '-', '-', '1700000000'),
                  (TARGET + '@b', 'snapshot', '-', '-', '-'))
    # a replication stream carried snapshot properties: old stamps for @a and @b, and one for its own @c
    after = tree((TARGET, 'filesystem', 'noauto', 'on'), (TARGET + '@a', 'snapshot', '-', '-', '1'),
                 (TARGET + '@b', 'snapshot', '-', '-', '2'), (TARGET + '@c', 'snapshot', '-', '-', '3'))
    listings = iter([before, after])
    runner = Runner([(['list', '-H', '-p', '-r'], (0, lambda: next(listings), ''))])
    session = Session(tmp_path, runner, zfs_path=str(fake_zfs / 'zfs'))
    assert session(remote_command(receive_argv(TARGET, filesystem=True, rollback=False, properties={}))) == 0
    assert runner.calls[2:] == [['set', f'{STAMP_PROPERTY}=1700000000', TARGET + '@a'],
                                ['inherit', STAMP_PROPERTY, TARGET + '@b'],
                                ['set', f'{STAMP_PROPERTY}={NOW}', TARGET + '@c']]
    assert 'altered the arrival stamps of 2 snapshot(s)' in session.logged[-1][1]


def test_stamping_that_fails_fails_the_receive_loudly(tmp_path, fake_zfs):
    after = tree((TARGET, 'filesystem', 'noauto', 'on'), (TARGET + '@a', 'snapshot', '-', '-'))
    listings = iter(['', after])
    runner = Runner([(['list', '-H', '-p', '-r'], (0, lambda: next(listings), '')),
                     (['set'], (1, '', 'permission denied\n'))])
    session = Session(tmp_path, runner, zfs_path=str(fake_zfs / 'zfs'))
    assert session(remote_command(receive_argv(TARGET, filesystem=True, rollback=False, properties={}))) == 1
    assert 'could not stamp' in session.stderr.getvalue()
    assert session.logged[-1][0] == syslog.LOG_ERR


@pytest.mark.parametrize('command', [
    None,
    'bash -i',
    remote_command(['zfs', 'destroy', '-r', 'zfsbackups/c1']),
    remote_command(receive_argv(TARGET, filesystem=True, rollback=True, properties={})),
    remote_command(receive_argv('zfsbackups/c2/x', filesystem=True, rollback=False, properties={})),
    remote_command(['zfs', 'version']) + '; reboot',
])
def test_a_refusal_runs_nothing_and_says_why_once(tmp_path, command):
    runner = Runner()
    session = Session(tmp_path, runner)
    assert session(command) == 1
    assert runner.calls == []
    lines = session.stderr.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith('pyzfsautosnap serve: refused: ')
    assert session.logged == [(syslog.LOG_WARNING, lines[0].split(': ', 1)[1])]
    assert session.stdout == b''


def test_listings_and_holds_pass_through_unchanged(tmp_path):
    runner = Runner([(['list'], (0, 'zfsbackups/c1\n', '')), (['hold'], (1, '', "cannot hold: tag already exists\n"))])
    session = Session(tmp_path, runner)
    assert session(remote_command(['zfs', 'list', '-H', '-o', 'name', 'zfsbackups/c1'])) == 0
    assert session.stdout == b'zfsbackups/c1\n'
    assert session(remote_command(['zfs', 'hold', 'pyzfsautosnap:x', TARGET + '@a'])) == 1
    assert 'tag already exists' in session.stderr.getvalue()
    assert runner.calls == [['list', '-H', '-o', 'name', 'zfsbackups/c1'], ['hold', 'pyzfsautosnap:x', TARGET + '@a']]


def test_a_probe_is_answered_without_a_shell(tmp_path, monkeypatch):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    tool = bindir / 'mbuffer'
    tool.write_text('#!/bin/sh\n')
    tool.chmod(0o755)
    monkeypatch.setenv('PATH', str(bindir))
    runner = Runner()
    session = Session(tmp_path, runner)
    assert session(remote_command(which_argv('mbuffer'))) == 0
    assert session.stdout == f'{tool}\n'.encode()
    assert session(remote_command(which_argv('zstd'))) == 1
    assert runner.calls == []


TOKEN = '1-e604ea4bf-e0-789c63a2'


@pytest.mark.parametrize('toname,allowed', [('tank/home@b', True), ('tank/other@b', False), ('tank/homes@b', False)])
def test_a_resume_token_is_decoded_before_anything_is_sent(tmp_path, fake_zfs, toname, allowed):
    decoded = f'resume token contents:\nnvlist version: 0\n\ttoguid = 0x1\n\ttoname = {toname}\n'
    runner = Runner([(['send', '-n', '-v', '-P', '-t'], (0, decoded, ''))])
    session = Session(tmp_path, runner, zfs_path=str(fake_zfs / 'zfs'), mode='send', roots=['tank/home'])
    rc = session(remote_command(send_argv(['-t', TOKEN], False)))
    assert runner.calls == [['send', '-n', '-v', '-P', '-t', TOKEN]]
    if allowed:
        assert rc == 0
        assert json.loads((fake_zfs / 'argv.json').read_text()) == ['send', '-t', TOKEN]
    else:
        assert rc == 1
        assert 'outside tank/home' in session.stderr.getvalue()
        assert not (fake_zfs / 'argv.json').exists()


def test_an_estimate_in_sending_mode_is_built_by_the_choke_point(tmp_path):
    runner = Runner([(['send'], (0, 'size\t1024\n', ''))])
    session = Session(tmp_path, runner, mode='send', roots=['tank/home'])
    assert session(remote_command(estimate_argv(['-i', 'tank/home@a', 'tank/home@b'], True))) == 0
    assert runner.calls == [['send', '-n', '-v', '-P', '-w', '-i', 'tank/home@a', 'tank/home@b']]
    assert session.stdout == b'size\t1024\n'


@pytest.mark.parametrize('argv,code,message', [
    (['serve'], 2, 'roots is required'),
    (['serve', '--root', 'zfsbackups/c1/../c2'], 2, 'not a valid dataset name'),
    (['serve', '--root', 'zfsbackups/c1', '--root', 'zfsbackups/c1/x'], 2, 'lies inside'),
])
def test_the_command_line_refuses_a_bad_configuration(argv, code, message, capsys):
    stderr = io.StringIO()
    assert _cli.main(argv, stderr=stderr) == code
    assert message in stderr.getvalue()
    assert capsys.readouterr().out == ''


def test_the_command_line_reads_the_original_command(monkeypatch, capsys):
    monkeypatch.setenv('SSH_ORIGINAL_COMMAND', 'rm -rf /')
    monkeypatch.setattr(syslog, 'syslog', lambda *a: None)
    stderr = io.StringIO()
    assert _cli.main(['serve', '--root', 'zfsbackups/c1'], stderr=stderr) == 1
    assert stderr.getvalue() == "pyzfsautosnap serve: refused: rm is not a command this key may run: 'rm -rf /'\n"
    assert capsys.readouterr().out == ''


def test_serve_loads_no_other_subcommand(tmp_path):
    """sshd starts serve for every command a client sends: it parses its own options only."""
    src = os.path.dirname(_cli.__file__)
    shutil.copytree(src, tmp_path / 'pzas', ignore=shutil.ignore_patterns('__pycache__'))
    probe = textwrap.dedent('''
        import io, os, sys, syslog
        syslog.syslog = lambda *a: None
        os.environ['SSH_ORIGINAL_COMMAND'] = 'id'
        from pzas import _cli
        err = io.StringIO()
        code = _cli.main(['serve', '--root', 'zfsbackups/c1'], stderr=err)
        print(code, err.getvalue().strip())
        print(' '.join(sorted(m for m in sys.modules if m.startswith('pzas.'))))
    ''')
    proc = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=str(tmp_path), check=True,
                          env={'PATH': os.environ.get('PATH', ''), 'PYTHONPATH': str(tmp_path)})
    refusal, loaded = proc.stdout.splitlines()
    assert refusal.startswith('1 pyzfsautosnap serve: refused: id is not a command'), refusal
    assert 'pzas._serve_options' in loaded.split()
    for other in ('_autosnap_options', '_replicate_options', '_retain_options', '_replicate', '_autosnap', '_retain'):
        assert f'pzas.{other}' not in loaded.split(), loaded


def test_every_subcommand_is_listed_and_parses_its_own_options():
    parser = _cli.build_parser('retain')
    assert parser.parse_args(['retain', '--root', 'zfsbackups/c1', '--policy', 'daily=3']).roots == ['zfsbackups/c1']
    listed = parser.format_help()
    assert all(name in listed for name in _cli.COMMANDS)
    with pytest.raises(SystemExit):
        _cli.build_parser('retain').parse_args(['serve', '--root', 'zfsbackups/c1'])
