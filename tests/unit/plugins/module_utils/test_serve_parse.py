# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The forced command's parser: every command line the engine sends is accepted, nothing else is."""

from __future__ import annotations

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import (
    mbuffer_argv, receiver_stages, sender_stages)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._serve_parse import (
    CreateParent, HoldChange, Holds, Listing, Probe, Receive, Refused, Send, Version, check_name, describe, parse)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import (
    remote_command, remote_script, which_argv)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import (
    PARENT_PROPERTIES, SNAPSHOT_COLUMNS, estimate_argv, receive_argv, send_argv)

ROOTS = ['zfsbackups/c1']
SRC_ROOTS = ['tank/home', 'tank/db']
TARGET = 'zfsbackups/c1/tank/home'
TOKEN = '1-e604ea4bf-e0-789c63a2'


def recv(target=TARGET, **kw):
    return receive_argv(target, filesystem=kw.pop('filesystem', True), rollback=kw.pop('rollback', False),
                        properties=kw.pop('properties', {}), exclude=kw.pop('exclude', ()))


def pipeline(argv, mbuffer=True, compression='zstd'):
    return remote_script(receiver_stages(argv, mbuffer=mbuffer_argv('1G', 300) if mbuffer else None,
                                         compression=compression))


def listing(*args):
    return remote_command(['zfs', 'list', *args])


# ------------------------------------------------------------------ what the engine sends to a target
ACCEPTED_RECEIVE = [
    ('version', remote_command(['zfs', 'version']), Version()),
    ('probe mbuffer', remote_command(which_argv('mbuffer')), Probe('mbuffer')),
    ('probe zstd', remote_command(which_argv('zstd')), Probe('zstd')),
    ('datasets', listing('-H', '-p', '-t', 'filesystem,volume', '-o', 'name,type,written,receive_resume_token',
                         '-r', 'zfsbackups/c1/tank'), Listing),
    ('datasets -d 0', listing('-H', '-p', '-t', 'filesystem,volume', '-o', 'name,type', '-d', '0', TARGET), Listing),
    ('snapshots', listing('-H', '-p', '-t', 'snapshot', '-o', ','.join(SNAPSHOT_COLUMNS), '-r', TARGET, 'zfsbackups/c1/x'),
     Listing),
    ('snapshots -d 1', listing('-H', '-p', '-t', 'snapshot', '-o', ','.join(SNAPSHOT_COLUMNS), '-d', '1', TARGET), Listing),
    ('exists', listing('-H', '-o', 'name', 'zfsbackups/c1'), Listing),
    ('holds', remote_command(['zfs', 'holds', '-H', TARGET + '@a', TARGET + '@b']), Holds((TARGET + '@a', TARGET + '@b'))),
    ('hold', remote_command(['zfs', 'hold', 'pyzfsautosnap:client1:zfsbackups/c1', TARGET + '@a']), HoldChange),
    ('release', remote_command(['zfs', 'release', 'pyzfsautosnap:x', TARGET + '@a', TARGET + '@b']), HoldChange),
    ('parent', remote_command(['zfs', 'create', *(a for k, v in PARENT_PROPERTIES.items() for a in ('-o', f'{k}={v}')),
                               'zfsbackups/c1/tank']), CreateParent),
    ('receive alone', remote_command(recv()), Receive),
    ('receive volume', remote_command(recv(filesystem=False)), Receive),
    ('receive user property', remote_command(recv(properties={'org.example:owner': 'ops team'})), Receive),
    ('receive compression', remote_command(recv(properties={'compression': 'zstd'}, exclude=('atime',))), Receive),
    ('zstd mbuffer receive', pipeline(recv()), Receive),
    ('lz4 receive', pipeline(recv(), mbuffer=False, compression='lz4'), Receive),
    ('mbuffer receive', pipeline(recv(), compression=None), Receive),
    ('mbuffer rate', remote_script(receiver_stages(recv(), mbuffer=mbuffer_argv('512M', 60, '10M'))), Receive),
    ('mbuffer 4G', remote_script(receiver_stages(recv(), mbuffer=mbuffer_argv('4G', 300))), Receive),
    ('mbuffer 5%', remote_script(receiver_stages(recv(), mbuffer=mbuffer_argv('5%', 300))), Receive),
    ('name with space', remote_command(recv('zfsbackups/c1/my data')), Receive),
]


@pytest.mark.parametrize('command,expected', [c[1:] for c in ACCEPTED_RECEIVE], ids=[c[0] for c in ACCEPTED_RECEIVE])
def test_what_the_engine_sends_to_a_target_is_accepted(command, expected):
    request, _parts = parse(command, ROOTS)
    if isinstance(expected, type):
        assert isinstance(request, expected)
    else:
        assert request == expected


def test_a_receive_records_what_the_client_asked_for():
    request, parts = parse(pipeline(recv(properties={'org.example:a': '1'}, exclude=('atime',))), ROOTS)
    assert request == Receive(TARGET, True, (('org.example:a', '1'),), ('atime',), decompress='zstd',
                              mbuffer=mbuffer_argv('1G', 300))
    assert parts[-1] == list(recv(properties={'org.example:a': '1'}, exclude=('atime',)))
    volume, _parts = parse(remote_command(recv(filesystem=False)), ROOTS)
    assert volume.filesystem is False


# ------------------------------------------------------------------ what the engine sends to a source (pull)
ACCEPTED_SEND = [
    ('version', remote_command(['zfs', 'version']), Version),
    ('datasets', listing('-H', '-p', '-t', 'filesystem,volume', '-o', 'name,type,encryption', '-r', 'tank/home', 'tank/db'),
     Listing),
    ('snapshots and bookmarks', listing('-H', '-p', '-t', 'snapshot,bookmark', '-o', ','.join(SNAPSHOT_COLUMNS), '-r',
                                        'tank/home'), Listing),
    ('full', remote_script(sender_stages(send_argv(['tank/home@a'], False), mbuffer=mbuffer_argv('1G', 300),
                                         compression='zstd')), Send),
    ('incremental', remote_script(sender_stages(send_argv(['-I', 'tank/home@a', 'tank/home@b'], False),
                                                compression='lz4')), Send),
    ('from a bookmark', remote_command(send_argv(['-i', 'tank/home#a', 'tank/home@b'], False)), Send),
    ('raw', remote_command(send_argv(['-i', 'tank/db@a', 'tank/db@b'], True)), Send),
    ('resume', remote_script(sender_stages(send_argv(['-t', TOKEN], False), mbuffer=mbuffer_argv('1G', 300))), Send),
    ('estimate', remote_command(estimate_argv(['-I', 'tank/home@a', 'tank/home@b'], False)), Send),
    ('estimate resume', remote_command(estimate_argv(['-t', TOKEN], False)), Send),
    ('hold', remote_command(['zfs', 'hold', 'pyzfsautosnap:backup:zfsbackups/c1', 'tank/home@b']), HoldChange),
    ('holds', remote_command(['zfs', 'holds', '-H', 'tank/home@b']), Holds),
]


@pytest.mark.parametrize('command,expected', [c[1:] for c in ACCEPTED_SEND], ids=[c[0] for c in ACCEPTED_SEND])
def test_what_the_engine_sends_to_a_source_is_accepted(command, expected):
    request, _parts = parse(command, SRC_ROOTS, 'send')
    assert isinstance(request, expected)


def test_a_send_keeps_its_arguments_for_the_choke_point():
    request, _parts = parse(remote_command(send_argv(['-i', 'tank/home#a', 'tank/home@b'], False)), SRC_ROOTS, 'send')
    assert request == Send(('-i', 'tank/home#a', 'tank/home@b'), False, False, snapshot='tank/home@b')
    resume, _parts = parse(remote_command(estimate_argv(['-t', TOKEN], False)), SRC_ROOTS, 'send')
    assert (resume.token, resume.estimate) == (TOKEN, True)


# ------------------------------------------------------------------ everything else
def swap(command, old, new):
    assert old in command
    return command.replace(old, new, 1)


HOSTILE_RECEIVE = [
    ('interactive login', None),
    ('empty', ''),
    ('a shell', 'bash'),
    ('sh -i', 'sh -i'),
    ('bare zfs', 'zfs list -r zfsbackups/c1'),
    ('other locale', swap(remote_command(['zfs', 'version']), 'LC_ALL=C', 'LC_ALL=POSIX')),
    ('other env', swap(remote_command(['zfs', 'version']), 'LC_ALL=C', 'LD_PRELOAD=/tmp/x.so')),
    ('destroy', remote_command(['zfs', 'destroy', '-r', 'zfsbackups/c1'])),
    ('destroy snapshots', remote_command(['zfs', 'destroy', TARGET + '@a,b'])),
    ('rollback', remote_command(['zfs', 'rollback', '-r', TARGET + '@a'])),
    ('rename', remote_command(['zfs', 'rename', TARGET + '@a', TARGET + '@z'])),
    ('promote', remote_command(['zfs', 'promote', TARGET])),
    ('set', remote_command(['zfs', 'set', 'readonly=off', TARGET])),
    ('inherit', remote_command(['zfs', 'inherit', 'readonly', TARGET])),
    ('program', remote_command(['zfs', 'program', 'zfsbackups', '/tmp/x.lua'])),
    ('allow', remote_command(['zfs', 'allow', '-u', 'zfsrecv', 'destroy', TARGET])),
    ('unallow', remote_command(['zfs', 'unallow', '-u', 'zfsrecv', TARGET])),
    ('snapshot', remote_command(['zfs', 'snapshot', TARGET + '@x'])),
    ('clone', remote_command(['zfs', 'clone', TARGET + '@a', 'zfsbackups/c1/x'])),
    ('send from the target', remote_command(send_argv([TARGET + '@a'], False))),
    ('zpool', remote_command(['zpool', 'destroy', 'zfsbackups'])),
    ('receive -F', remote_command(recv(rollback=True))),
    ('receive -F in a pipeline', pipeline(recv(rollback=True))),
    ('receive -A', remote_command(['zfs', 'receive', '-A', TARGET])),
    ('receive -d', swap(remote_command(recv()), ' -u ', ' -u -d ')),
    ('receive -e', swap(remote_command(recv()), ' -u ', ' -u -e ')),
    ('receive -v', swap(remote_command(recv()), ' -u ', ' -u -v ')),
    ('receive without -u', swap(remote_command(recv()), ' -s -u ', ' -s ')),
    ('receive without readonly', swap(remote_command(recv()), ' -o readonly=on', '')),
    ('receive readonly=off', swap(remote_command(recv()), 'readonly=on', 'readonly=off')),
    ('receive canmount=on', swap(remote_command(recv()), 'canmount=noauto', 'canmount=on')),
    ('mountpoint=/etc', remote_command(recv(properties={'mountpoint': '/etc'}))),
    ('mountpoint=/', remote_command(recv(properties={'mountpoint': '/'}))),
    ('sharenfs', remote_command(recv(properties={'sharenfs': 'rw=@0.0.0.0/0'}))),
    ('sharesmb', remote_command(recv(properties={'sharesmb': 'on'}))),
    ('setuid', remote_command(recv(properties={'setuid': 'on'}))),
    ('exec', remote_command(recv(properties={'exec': 'on'}))),
    ('devices', remote_command(recv(properties={'devices': 'on'}))),
    ('zoned', remote_command(recv(properties={'zoned': 'on'}))),
    ('refreservation', remote_command(recv(properties={'refreservation': '100T'}))),
    ('keylocation', remote_command(recv(properties={'keylocation': 'file:///etc/shadow'}))),
    ('encryption', remote_command(recv(properties={'encryption': 'on'}))),
    ('dedup', remote_command(recv(properties={'dedup': 'on'}))),
    ('stamp', remote_command(recv(properties={'pyzfsautosnap:received': '0'}))),
    ('own namespace', remote_command(recv(properties={'pyzfsautosnap:other': '0'}))),
    ('exclude readonly', remote_command(recv(exclude=('readonly',)))),
    ('exclude the stamp', remote_command(recv(exclude=('pyzfsautosnap:received',)))),
    ('property with shell', remote_command(recv(properties={'org.example:x;id': '1'}))),
    ('another client', remote_command(recv('zfsbackups/c2/tank'))),
    ('the root itself', remote_command(recv('zfsbackups/c1'))),
    ('the pool', remote_command(recv('zfsbackups'))),
    ('prefix trick', remote_command(recv('zfsbackups/c10/tank'))),
    ('dot dot', remote_command(recv('zfsbackups/c1/../c2'))),
    ('dot', remote_command(recv('zfsbackups/c1/./x'))),
    ('double slash', remote_command(recv('zfsbackups/c1//x'))),
    ('trailing slash', remote_command(recv('zfsbackups/c1/x/'))),
    ('look-alike', remote_command(recv('zfsbackups/c1/t\u0430nk'))),
    ('full-width slash', remote_command(recv('zfsbackups/c1\uff0fx'))),
    ('leading space', remote_command(recv('zfsbackups/c1/ x'))),
    ('snapshot as target', remote_command(recv(TARGET + '@a'))),
    ('bookmark as target', remote_command(recv(TARGET + '#a'))),
    ('option as target', remote_command(recv('-F'))),
    ('two targets', swap(remote_command(recv()), TARGET, TARGET + ' zfsbackups/c1/x')),
    ('semicolon', remote_command(['zfs', 'version']) + '; id'),
    ('and', remote_command(['zfs', 'version']) + ' && id'),
    ('pipe to a shell', remote_command(['zfs', 'version']) + ' | sh'),
    ('command substitution', listing('-H', '-o', 'name', 'zfsbackups/c1/$(id)')),
    ('backticks', listing('-H', '-o', 'name', 'zfsbackups/c1/`id`')),
    ('unquoted substitution', "env LC_ALL=C zfs list -H -o name zfsbackups/c1/$(id)"),
    ('newline', remote_command(['zfs', 'version']) + '\nid'),
    ('newline in a name', listing('-H', '-o', 'name', 'zfsbackups/c1/a\nb')),
    ('NUL', remote_command(['zfs', 'version']) + '\0'),
    ('NUL in a name', listing('-H', '-o', 'name', 'zfsbackups/c1/a\0b')),
    ('long argument', listing('-H', '-o', 'name', 'zfsbackups/c1/' + 'a' * 300)),
    ('very long command', listing('-H', '-o', 'name', *(['zfsbackups/c1/a'] * 20000))),
    ('unbalanced quote', "env LC_ALL=C zfs list -H -o name 'zfsbackups/c1"),
    ('other quoting', "env LC_ALL=C zfs list -H -o name 'zfsbackups/c1'"),
    ('double space', 'env LC_ALL=C zfs  version'),
    ('list without names', listing('-H', '-o', 'name')),
    ('list of the pool', listing('-H', '-o', 'name', '-r', 'zfsbackups')),
    ('list of another client', listing('-H', '-o', 'name', '-r', 'zfsbackups/c2')),
    ('list -s', listing('-H', '-s', 'name', '-o', 'name', TARGET)),
    ('list -t all', listing('-H', '-t', 'all', TARGET)),
    ('list -o twice', listing('-H', '-o', 'name', '-o', 'guid', TARGET)),
    ('list -r and -d', listing('-H', '-r', '-d', '1', TARGET)),
    ('list deep', listing('-H', '-d', '99999', TARGET)),
    ('list odd column', listing('-H', '-o', 'name,$(id)', TARGET)),
    ('holds of another client', remote_command(['zfs', 'holds', '-H', 'zfsbackups/c2/x@a'])),
    ('holds -r', remote_command(['zfs', 'holds', '-r', TARGET + '@a'])),
    ('hold with a foreign tag', remote_command(['zfs', 'hold', 'keep', TARGET + '@a'])),
    ('release a foreign tag', remote_command(['zfs', 'release', 'keep', TARGET + '@a'])),
    ('release -r', remote_command(['zfs', 'release', '-r', 'pyzfsautosnap:x', TARGET + '@a'])),
    ('hold of another client', remote_command(['zfs', 'hold', 'pyzfsautosnap:x', 'zfsbackups/c2/x@a'])),
    ('hold of a dataset', remote_command(['zfs', 'hold', 'pyzfsautosnap:x', TARGET])),
    ('hold without names', remote_command(['zfs', 'hold', 'pyzfsautosnap:x'])),
    ('create with a mountpoint', remote_command(['zfs', 'create', '-o', 'mountpoint=/etc', 'zfsbackups/c1/x'])),
    ('create -p', remote_command(['zfs', 'create', '-p', 'zfsbackups/c1/x/y'])),
    ('create -V', remote_command(['zfs', 'create', '-V', '100T', 'zfsbackups/c1/x'])),
    ('create another client', remote_command(['zfs', 'create', '-o', 'canmount=off', '-o', 'com.sun:auto-snapshot=false',
                                              'zfsbackups/c2'])),
    ('probe for a shell', remote_command(which_argv('bash'))),
    ('probe script', remote_command(['sh', '-c', 'id', 'sh', 'mbuffer'])),
    ('mbuffer writes a file', pipeline(recv()).replace('-W 300;', '-W 300 -o /etc/passwd;')),
    ('mbuffer reads a file', pipeline(recv()).replace('-W 300;', '-W 300 -i /etc/shadow;')),
    ('mbuffer odd size', pipeline(recv()).replace('-m 1G', '-m 1G;id')),
    ('mbuffer all the memory', pipeline(recv()).replace('-m 1G', '-m 95%')),
    ('mbuffer huge', pipeline(recv()).replace('-m 1G', '-m 64G')),
    ('zstd writes a file', pipeline(recv()).replace('zstd -q -d -c;', 'zstd -q -d -c -o /etc/passwd;')),
    ('zstd compresses', pipeline(recv()).replace('zstd -q -d -c;', 'zstd -q -c;')),
    ('extra stage', pipeline(recv()).replace('{ zstd', '{ cat /etc/shadow; echo "@pyzfsautosnap-rc 0 $?" >&2; } | { zstd')),
    ('pipeline into a shell', remote_script(receiver_stages(('sh', '-c', 'id'), compression='zstd'))),
    ('pipeline into a listing', remote_script(receiver_stages(('zfs', 'list', '-H', 'zfsbackups/c1'),
                                                              compression='zstd'))),
    ('pipeline without the prefix', pipeline(recv()).replace('LC_ALL=C; export LC_ALL; ', '')),
    ('pipeline with a second command', pipeline(recv()).replace('export LC_ALL; ', 'export LC_ALL; id; ')),
    ('pipeline with a subshell', pipeline(recv()).replace('{ zstd', '{ $(id); zstd')),
    ('pipeline with odd markers', pipeline(recv()).replace('rc 0 $?', 'rc 0 $(id)')),
    ('sh -c a script', remote_command(['sh', '-c', 'zfs destroy -r zfsbackups'])),
    ('sh -c outside env', "sh -c 'zfs destroy -r zfsbackups'"),
]


@pytest.mark.parametrize('command', [c[1] for c in HOSTILE_RECEIVE], ids=[c[0] for c in HOSTILE_RECEIVE])
def test_anything_else_is_refused_on_a_target(command):
    with pytest.raises(Refused) as info:
        parse(command, ROOTS)
    reason = str(info.value)
    assert reason and '\n' not in reason


HOSTILE_SEND = [
    ('receive', remote_command(recv('tank/home/x'))),
    ('create', remote_command(['zfs', 'create', '-o', 'canmount=off', '-o', 'com.sun:auto-snapshot=false', 'tank/home/x'])),
    ('outside', remote_command(send_argv(['tank/other@a'], False))),
    ('the pool', remote_command(send_argv(['tank@a'], False))),
    ('prefix trick', remote_command(send_argv(['tank/homes@a'], False))),
    ('base outside', remote_command(send_argv(['-i', 'tank/other@a', 'tank/home@b'], False))),
    ('a dataset', remote_command(send_argv(['tank/home'], False))),
    ('send -R', remote_command(['zfs', 'send', '-R', 'tank/home@a'])),
    ('send -p', remote_command(['zfs', 'send', '-p', '-L', '-e', '-c', 'tank/home@a'])),
    ('send without flags', remote_command(['zfs', 'send', 'tank/home@a'])),
    ('two snapshots', remote_command(['zfs', 'send', '-L', '-e', '-c', 'tank/home@a', 'tank/home@b'])),
    ('odd token', remote_command(send_argv(['-t', 'x;id'], False))),
    ('bookmark', remote_command(['zfs', 'bookmark', 'tank/home@a', 'tank/home#a'])),
    ('destroy a bookmark', remote_command(['zfs', 'destroy', 'tank/home#a'])),
    ('list outside', listing('-H', '-o', 'name', '-r', 'tank')),
    ('pipeline into a file', remote_script(sender_stages(send_argv(['tank/home@a'], False), compression='zstd')).replace(
        'zstd -q -c', 'zstd -q -c -o /tmp/x')),
    ('pipeline from a file', remote_script(sender_stages(('cat', '/etc/shadow'), compression='zstd'))),
]


@pytest.mark.parametrize('command', [c[1] for c in HOSTILE_SEND], ids=[c[0] for c in HOSTILE_SEND])
def test_anything_else_is_refused_on_a_source(command):
    with pytest.raises(Refused):
        parse(command, SRC_ROOTS, 'send')


@pytest.mark.parametrize('name,what,ok', [
    ('tank', 'dataset', True),
    ('tank/a b:c.d-e_f', 'dataset', True),
    ('tank/a@b', 'snapshot', True),
    ('tank/a@b', 'dataset', False),
    ('tank/a', 'snapshot', False),
    ('tank/a@', 'snapshot', False),
    ('tank/a@b@c', 'snapshot', False),
    ('', 'dataset', False),
    ('t' * 256, 'dataset', False),
    ('tank/\u00e9', 'dataset', False),
    ('tank/a\tb', 'dataset', False),
    ('tank/a,b', 'dataset', False),
    ('tank/a%b', 'dataset', False),
    ('tank/..', 'dataset', False),
])
def test_names_are_zfs_names_and_nothing_more(name, what, ok):
    if ok:
        assert check_name(name, what) == name
    else:
        with pytest.raises(Refused):
            check_name(name, what)


@pytest.mark.parametrize('command,shown', [
    (None, '(none)'),
    ('zfs version', "'zfs version'"),
    ("rm -rf / #'", "'rm -rf / #'\"'\"''"),
    ('a\nb\0c\u0430', "'a\\nb\\x00c\\u0430'"),
    ('x' * 500, "'" + 'x' * 400 + "…'"),
])
def test_refused_commands_are_logged_quoted_printable_and_cut(command, shown):
    assert describe(command) == shown
