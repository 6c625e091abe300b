# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pathlib
import shlex
import subprocess

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _transport_factory
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import (
    RC_MARKER,
    LocalSegment,
    SshOptions,
    Stage,
    quote_argv,
    remote_command,
    remote_script,
    split_markers,
    validate_host,
    validate_ssh_options,
    which_argv,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_factory import make_transport
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_local import LocalTransport
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_openssh import OpenSshTransport
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport_paramiko import ParamikoTransport
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import Zfs

HOSTILE = [
    "tank/a b; touch {pwned}",
    "tank/$(touch {pwned})",
    "tank/`touch {pwned}`",
    "it's \"quoted\" \\ back",
    "tank/a|touch {pwned}&",
    "-oProxyCommand=touch {pwned}",
    "line\nbreak; touch {pwned}",
]


@pytest.mark.parametrize('value', HOSTILE)
def test_remote_command_survives_a_shell(value: str, tmp_path: pathlib.Path) -> None:
    pwned = tmp_path / 'pwned'
    value = value.format(pwned=pwned)
    command = remote_command(['printf', '%s', value])
    assert shlex.split(command) == ['env', 'LC_ALL=C', 'printf', '%s', value]
    out = subprocess.run(['sh', '-c', command], capture_output=True, check=True)
    assert out.stdout.decode() == value
    assert not pwned.exists()


@pytest.mark.parametrize('value', HOSTILE)
def test_remote_script_survives_two_shells(value: str, tmp_path: pathlib.Path) -> None:
    pwned = tmp_path / 'pwned'
    value = value.format(pwned=pwned)
    stages = [Stage('send', ('printf', '%s', value)), Stage('mbuffer', ('cat',)), Stage('receive', ('cat',))]
    script = remote_script(stages)
    # what a login shell does with the command line ssh hands it
    out = subprocess.run(['sh', '-c', script], capture_output=True, check=True)
    assert out.stdout.decode() == value
    codes, rest = split_markers(out.stderr.decode())
    assert codes == {0: 0, 1: 0} and rest == ''
    assert not pwned.exists()


def test_remote_script_reports_each_stage() -> None:
    stages = [Stage('send', ('sh', '-c', 'echo data; exit 4')), Stage('mbuffer', ('cat',)), Stage('receive', ('sh', '-c', 'cat >/dev/null; exit 5'))]
    out = subprocess.run(['sh', '-c', remote_script(stages)], capture_output=True, check=False)
    codes, _rest = split_markers(out.stderr.decode())
    assert codes == {0: 4, 1: 0}
    assert out.returncode == 5


def test_single_stage_needs_no_script() -> None:
    assert remote_script([Stage('send', ('zfs', 'send', 'tank/a@s'))]) == 'env LC_ALL=C zfs send tank/a@s'
    assert RC_MARKER not in remote_script([Stage('send', ('zfs', 'send', 'x'))])


def test_split_markers_keeps_other_lines() -> None:
    codes, rest = split_markers(f'warning: x\n{RC_MARKER} 0 141\n{RC_MARKER} 1 0\nfatal: y\n')
    assert codes == {0: 141, 1: 0}
    assert rest == 'warning: x\nfatal: y\n'


def test_quote_argv() -> None:
    assert quote_argv(['zfs', 'list', 'a b']) == "zfs list 'a b'"


@pytest.mark.parametrize('host', ['backup', 'backup.example.org', '192.0.2.10', '2001:db8::10', 'fe80::1%eth0', 'my_alias-1'])
def test_validate_host_accepts(host: str) -> None:
    assert validate_host(host) == host


@pytest.mark.parametrize('host', ['', '-oProxyCommand=id', 'a b', 'host;id', 'user@host', 'host\n', '$(id)'])
def test_validate_host_refuses(host: str) -> None:
    with pytest.raises(ValidationError):
        validate_host(host)


@pytest.mark.parametrize('options', [
    SshOptions(user='-oProxyCommand=id'),
    SshOptions(user='a b'),
    SshOptions(port=0),
    SshOptions(port=70000),
    SshOptions(identity_file='/root/my key'),
    SshOptions(known_hosts_file='-F/etc/x'),
    SshOptions(config_file='/tmp/"x'),
])
def test_validate_ssh_options_refuses(options: SshOptions) -> None:
    with pytest.raises(ValidationError):
        validate_ssh_options(options)


def test_which_argv_passes_the_name_as_an_argument() -> None:
    assert subprocess.run(which_argv('sh'), check=False).returncode == 0
    assert subprocess.run(which_argv('no-such-tool-here'), check=False).returncode != 0
    assert subprocess.run(which_argv('sh; exit 0'), check=False, capture_output=True).returncode != 0


def test_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_transport(None), LocalTransport)
    monkeypatch.setattr(_transport_factory.shutil, 'which', lambda name: '/usr/bin/ssh')
    assert isinstance(make_transport('backup'), OpenSshTransport)
    assert isinstance(make_transport('backup', 'paramiko'), ParamikoTransport)
    monkeypatch.setattr(_transport_factory.shutil, 'which', lambda name: None)
    assert isinstance(make_transport('backup'), ParamikoTransport)
    with pytest.raises(ValidationError, match='ssh client binary'):
        make_transport('backup', 'openssh')
    with pytest.raises(ValidationError):
        make_transport('backup', 'telnet')
    with pytest.raises(ValidationError):
        make_transport('-oProxyCommand=id')


def test_factory_without_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _transport_paramiko

    monkeypatch.setattr(_transport_factory.shutil, 'which', lambda name: None)
    monkeypatch.setattr(_transport_paramiko, 'HAS_PARAMIKO', False)
    with pytest.raises(ValidationError, match='neither'):
        make_transport('backup')


def test_local_transport() -> None:
    transport = LocalTransport()
    with transport:
        assert Zfs(transport.runner()).runner is transport.runner()
        segment = transport.segment([Stage('send', ('true',))])
        assert isinstance(segment, LocalSegment) and segment.stages[0].argv == ('true',)
    assert transport.describe() == 'localhost'
