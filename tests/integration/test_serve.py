# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The forced command on two real OpenZFS hosts: the engine's push from ``client`` and pull by ``target`` go
through it unchanged, and whoever holds the client's key can add snapshots to its root on the target and do
nothing else."""

from __future__ import annotations

import base64
import io
import os
import shlex
import tarfile
import time

import pytest

from conftest import FEATURE_PROBES
from test_replicate import checksums, snap_guids
from test_replicate import seed as replicate_seed

CLIENT, TARGET = 'client', 'target'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = '/usr/local/lib/pyzfsautosnap-serve-test'
BIN = '/usr/local/sbin/pyzfsautosnap-serve-test'
CLIENTS = {'a': 'recv-srv-a', 'b': 'recv-srv-b'}
SEND_USER = 'send-srv'
STAMP = 'pyzfsautosnap:received'
# what the target role delegates to a receive user (roles/target/vars/main.yml), receive:append where the series has it
PERMISSIONS = 'create,mount,{receive},readonly,canmount,userprop,hold,release,exec,setuid,devices,mountpoint,sharenfs,' \
              'sharesmb,reservation,refreservation'


def root(client: str) -> str:
    return f'zfsbackups/srv_{client}'


def engine_tarball() -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        folder = os.path.join(REPO, 'plugins', 'module_utils')
        for name in sorted(os.listdir(folder)):
            if name.endswith('.py'):
                tar.add(os.path.join(folder, name), arcname=f'pyzfsautosnap/{name}')
    return base64.b64encode(buf.getvalue()).decode('ascii')


def forced(roots: list[str], *extra: str) -> str:
    return ' '.join(shlex.quote(a) for a in [BIN, 'serve', *(f'--root={r}' for r in roots), *extra])


def install_engine(pair, host: str) -> None:
    # compiled as the client role installs it: the receive users cannot write bytecode of their own
    pair.ssh(host, ['sh', '-ec', f'rm -rf {LIB}; mkdir -p {LIB}; base64 -d | tar -xz -C {LIB}; python3 -m compileall -q {LIB}'],
             input_text=engine_tarball())
    pair.sh(host, f"""
        printf '%s\\n' '#!/usr/bin/python3' 'import sys' 'sys.path.insert(0, "{LIB}")' \\
          'from pyzfsautosnap._cli import main' 'raise SystemExit(main())' > {BIN}
        chmod 755 {BIN}
    """)


@pytest.fixture(scope='module')
def endpoint(pair):
    """Two clients' receive users and roots on the target, as the target role sets them up; the engine on both hosts."""
    append = pair.sh(TARGET, FEATURE_PROBES['receive:append'].replace('tank/', 'zfsbackups/'), check=False).returncode == 0
    receive = 'receive:append' if append else 'receive'
    for host in (CLIENT, TARGET):
        install_engine(pair, host)
    users = ''.join(f'''
        id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}
        install -d -m 755 -o root -g root ~{user}/.ssh
        printf '%s\\n' 'restrict,command="{forced([root(client)])}" '"$key" > ~{user}/.ssh/authorized_keys
        zfs create -o canmount=off -o com.sun:auto-snapshot=false {root(client)}
        zfs allow -u {user} {PERMISSIONS.format(receive=receive)} {root(client)}
    ''' for client, user in CLIENTS.items())
    # the client's root key, which the attacker holds
    key = pair.ssh(CLIENT, ['cat', '/root/.ssh/id_ed25519.pub']).stdout.strip()
    pair.sh(TARGET, f'key={shlex.quote(key)}\n{users}')
    open_client_connections(pair)
    yield receive
    close_client_connections(pair)
    pair.sh(TARGET, ' '.join(f'zfs destroy -R -f {root(c)};' for c in CLIENTS), check=False)


@pytest.fixture
def dataset(pair, request):
    """A fresh dataset on the client for one test, destroyed afterwards with its replicas on the target."""
    name = 'tank/' + request.node.name[:50]
    pair.ssh(CLIENT, ['zfs', 'create', '-p', name])
    yield name
    pair.sh(CLIENT, f'zfs destroy -R -f {name}', check=False)
    pair.sh(TARGET, ' '.join(f'zfs destroy -R -f {root(c)}/{name};' for c in CLIENTS), check=False)


def seed(pair, root_name: str, days=(1, 2), megabytes: int = 2) -> None:
    replicate_seed(pair, root_name, days, megabytes, host=CLIENT)


def push(pair, dataset: str, client: str = 'a', *extra: str, check: bool = True):
    argv = [BIN, 'replicate', f'{dataset}/data', '--recursive', '--target-host', TARGET,
            '--ssh-user', CLIENTS[client], '--target-root', root(client), *extra]
    res = pair.ssh(CLIENT, argv, check=False)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


# the attacker's commands share one connection per key (each still runs the forced command in a session of its own)
MUX = ['-o', 'ControlPath=/run/serve-test-%r']


def as_client(pair, command: str, client: str = 'a'):
    """*command* sent from the client over its key to the target, as an attacker holding it would."""
    return pair.ssh(CLIENT, ['ssh', '-T', '-o', 'BatchMode=yes', *MUX, '-l', CLIENTS[client], TARGET, command], check=False)


def open_client_connections(pair) -> None:
    for user in CLIENTS.values():
        master = ['ssh', '-f', '-N', '-o', 'BatchMode=yes', *MUX, '-o', 'ControlMaster=yes', '-o', 'ControlPersist=yes',
                  '-l', user, TARGET]
        pair.ssh(CLIENT, ['sh', '-c', f'{shlex.join(master)} </dev/null >/dev/null 2>&1'])


def close_client_connections(pair) -> None:
    for user in CLIENTS.values():
        pair.ssh(CLIENT, ['ssh', *MUX, '-O', 'exit', '-l', user, TARGET], check=False)


def everything(pair) -> dict[str, int]:
    """Every snapshot of the backup pool (all clients) with its guid."""
    return snap_guids(pair, 'zfsbackups', host=TARGET)


@pytest.mark.smoke
def test_push_through_the_forced_command(pair, dataset, endpoint):
    seed(pair, dataset)
    replica = f'{root("a")}/{dataset}/data'
    # a full and an incremental stream per dataset (two daily snapshots)
    push(pair, dataset, 'a', '--compression', 'zstd')
    assert snap_guids(pair, replica, host=TARGET) == snap_guids(pair, f'{dataset}/data', host=CLIENT)
    assert checksums(pair, f'{dataset}/data', host=CLIENT) == checksums(pair, replica, host=TARGET)
    props = pair.ssh(TARGET, ['zfs', 'get', '-H', '-p', '-o', 'name,property,value', '-r',
                              f'readonly,canmount,exec,setuid,devices,{STAMP}', replica]).stdout
    values: dict[tuple[str, str], str] = {}
    for line in props.splitlines():
        name, prop, value = line.split('\t')
        values[(name, prop)] = value
    for name in (replica, f'{replica}/child'):
        assert [values[(name, p)] for p in ('readonly', 'canmount', 'exec', 'setuid', 'devices')] == \
            ['on', 'noauto', 'off', 'off', 'off'], props
    now = int(pair.ssh(TARGET, ['date', '+%s']).stdout)
    stamps = [int(v) for (name, prop), v in values.items() if prop == STAMP and '@' in name and v != '-']
    # every snapshot that arrived (the replica's and its child's) carries the server's clock
    assert len(stamps) == len(snap_guids(pair, replica, host=TARGET))
    assert all(now - 900 <= s <= now for s in stamps), (now, stamps)
    journal = pair.ssh(TARGET, ['journalctl', '--no-pager', '-q', '-t', 'pyzfsautosnap-serve'], check=False).stdout
    assert f'receive into {replica}: rc 0' in journal, journal


def received_bytes(pair) -> int:
    """Bytes the target's running `zfs receive` has read so far (0 while none runs)."""
    out = pair.sh(TARGET, '''
        for p in $(pgrep -x zfs); do
          if tr '\\0' ' ' < /proc/$p/cmdline | grep -q ' receive '; then awk '/^rchar/ {print $2}' /proc/$p/io; exit 0; fi
        done
        echo 0
    ''').stdout.split()
    return int(out[0] or 0) if out else 0


def test_an_interrupted_push_resumes_through_the_forced_command(pair, dataset, endpoint):
    seed(pair, dataset, days=(1,), megabytes=12)
    replica = f'{root("a")}/{dataset}/data'
    # a slow first full stream (12 MiB at 1 MiB/s), stopped by SIGTERM once the target has part of it
    argv = [BIN, 'replicate', f'{dataset}/data', '--target-host', TARGET, '--ssh-user', CLIENTS['a'],
            '--target-root', root('a'), '--rate-limit', '1M']
    pair.sh(CLIENT, f'setsid sh -c {shlex.quote(shlex.join(argv) + " >/dev/null 2>&1 & echo $! > /run/serve-push.pid")} '
                    '</dev/null >/dev/null 2>&1; sleep 1')
    deadline = time.monotonic() + 300
    while received_bytes(pair) < 4 << 20:
        assert time.monotonic() < deadline, 'the stream never got going'
        time.sleep(2)
    pair.sh(CLIENT, 'pid=$(cat /run/serve-push.pid); kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 1; done')
    token = ''
    for _attempt in range(60):
        token = pair.ssh(TARGET, ['zfs', 'get', '-H', '-o', 'value', 'receive_resume_token', replica],
                         check=False).stdout.strip()
        if token not in ('', '-'):
            break
        time.sleep(1)
    assert token not in ('', '-'), 'no resumable state on the target'
    res = push(pair, dataset, 'a')
    assert '"action": "resume"' in res.stdout, res.stdout
    assert snap_guids(pair, replica, host=TARGET) == snap_guids(pair, f'{dataset}/data', host=CLIENT)
    # and the other transport for an incremental
    pair.sh(CLIENT, f'echo 02 >> /{dataset}/data/log.txt; zfs snapshot -r {dataset}/data@zfs-auto-snap_daily-2026-11-02-0000')
    res = push(pair, dataset, 'a', '--transport', 'paramiko', '--compression', 'lz4')
    assert '"action": "incremental"' in res.stdout, res.stdout
    assert snap_guids(pair, replica, host=TARGET) == snap_guids(pair, f'{dataset}/data', host=CLIENT)


def test_a_stolen_client_key_can_add_snapshots_and_nothing_else(pair, dataset, endpoint):
    seed(pair, dataset, days=(1, 2, 3))
    push(pair, dataset, 'a')
    # another client's backups on the same server (pushed here with its own key and user)
    other = f'{dataset}_b'
    pair.ssh(CLIENT, ['zfs', 'create', '-p', other])
    try:
        seed(pair, other, days=(1,), megabytes=1)
        push(pair, other, 'b')
        replica = f'{root("a")}/{dataset}/data'
        base = f'{replica}@zfs-auto-snap_daily-2026-11-01-0000'
        before = everything(pair)
        assert any(name.startswith('/srv_b/') for name in before)

        recv = 'env LC_ALL=C zfs receive -s -u -o readonly=on -o com.sun:auto-snapshot=false -o canmount=noauto'
        attacks = [
            'bash -i', 'id', 'sh -c id', "env LC_ALL=C sh -c 'cat /etc/shadow'",
            f'env LC_ALL=C zfs destroy -r {replica}', f'env LC_ALL=C zfs destroy {base}',
            f'env LC_ALL=C zfs rollback -r {base}', f'env LC_ALL=C zfs rename {base} {replica}@x',
            f'env LC_ALL=C zfs set readonly=off {replica}', f'env LC_ALL=C zfs inherit readonly {replica}',
            f'env LC_ALL=C zfs promote {replica}', f'env LC_ALL=C zfs allow -u nobody destroy {replica}',
            'env LC_ALL=C zfs program zfsbackups /tmp/x.lua', f'env LC_ALL=C zfs receive -A {replica}',
            f'{recv.replace(" -u", " -u -F")} {replica}',
            f'env LC_ALL=C zfs list -H -o name -r {root("b")}',
            'env LC_ALL=C zfs list -H -o name -r zfsbackups',
            f'env LC_ALL=C zfs send -L -e -c {base}',
            f'env LC_ALL=C zfs hold keep {base}', f'env LC_ALL=C zfs release pyzfsautosnap:x {root("b")}/x@a',
            f'{recv} {root("b")}/stolen',
            'env LC_ALL=C zfs version; id', f'env LC_ALL=C zfs list -H -o name {replica}$(id)',
        ]
        for attack in attacks:
            res = as_client(pair, attack)
            assert res.returncode == 1 and 'pyzfsautosnap serve: refused: ' in res.stderr, (attack, res)
            assert res.stdout == '', (attack, res.stdout)
        # a login without a command gets no shell either (and restrict allocates no terminal)
        login = pair.ssh(CLIENT, ['ssh', '-T', '-o', 'BatchMode=yes', '-l', CLIENTS['a'], TARGET], check=False,
                         input_text='id\nexit\n')
        assert login.returncode == 1 and 'uid=' not in login.stdout, login
        assert 'an interactive login is not allowed' in login.stderr, login

        # a stream that would overwrite the replica (a full stream onto it; -F is refused) is refused by zfs
        stale = as_client_stream(pair, f'zfs send {dataset}/data@zfs-auto-snap_daily-2026-11-01-0000', f'{recv} {replica}')
        assert stale.returncode != 0, stale
        # a stream that would mount itself over / arrives inert: nothing of it is mounted, run or shared
        pair.sh(CLIENT, f'zfs create -o mountpoint=/ -o canmount=noauto -o setuid=on -o exec=on -o devices=on '
                        f'{dataset}/evil; zfs snapshot {dataset}/evil@s')
        evil = as_client_stream(pair, f'zfs send -p {dataset}/evil@s', f'{recv} {root("a")}/evil')
        assert evil.returncode == 0, evil
        props = pair.ssh(TARGET, ['zfs', 'get', '-H', '-o', 'property,value,source',
                                  'mountpoint,canmount,readonly,setuid,exec,devices,sharenfs,mounted',
                                  f'{root("a")}/evil']).stdout
        got = {line.split('\t')[0]: line.split('\t')[1:] for line in props.splitlines()}
        assert got['mountpoint'][0] != '/' and got['mountpoint'][1] != 'received', props
        assert got['canmount'][0] == 'noauto' and got['readonly'][0] == 'on' and got['mounted'][0] == 'no', props
        assert [got[p][0] for p in ('setuid', 'exec', 'devices', 'sharenfs')] == ['off'] * 4, props

        after = everything(pair)
        # everything that was there is still there, unchanged; all that is new lies in the attacker's own root
        assert {k: v for k, v in after.items() if k in before} == before
        assert all(k.startswith('/srv_a/') for k in set(after) - set(before)), set(after) - set(before)

        # nor can it make the server prune what arrived before: neither by a flood nor by back-dating
        steer_pruning(pair, dataset)
        assert {k: v for k, v in everything(pair).items() if k.startswith('/srv_b/')} == \
            {k: v for k, v in before.items() if k.startswith('/srv_b/')}
    finally:
        pair.sh(CLIENT, f'zfs destroy -R -f {other}', check=False)
        pair.sh(TARGET, f'zfs destroy -R -f {root("b")}/{other}; zfs destroy -R -f {root("a")}/evil', check=False)


def as_client_stream(pair, send: str, command: str):
    """``send`` on the client piped into *command* over client a's key."""
    return pair.sh(CLIENT, f'{send} | ssh -T -o BatchMode=yes {shlex.join(MUX)} -l {CLIENTS["a"]} {TARGET} '
                           f'{shlex.quote(command)}', check=False)


def test_pull_through_the_forced_command_in_sending_mode(pair, dataset, endpoint):
    seed(pair, dataset)
    pull_root = f'zfsbackups/pull_{dataset.split("/", 1)[1]}'
    pair.sh(CLIENT, f'''
        id {SEND_USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {SEND_USER}
        install -d -m 755 -o root -g root ~{SEND_USER}/.ssh
        printf '%s\\n' 'restrict,command="{forced([f"{dataset}/data"], "--send")}" '"$(cat /root/.ssh/id_ed25519.pub)" \\
          > ~{SEND_USER}/.ssh/authorized_keys
        zfs allow -u {SEND_USER} send,hold,release {dataset}/data
    ''')
    try:
        res = pair.ssh(TARGET, [BIN, 'replicate', f'{dataset}/data', '--recursive', '--source-host', CLIENT,
                                '--ssh-user', SEND_USER, '--target-root', pull_root, '--compression', 'zstd'], check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert snap_guids(pair, f'{pull_root}/{dataset}/data', host=TARGET) == snap_guids(pair, f'{dataset}/data', host=CLIENT)
        # the backup server's key, stolen from it, reaches nothing else on the client
        for attack in [f'env LC_ALL=C zfs send -L -e -c {dataset}/other@x', 'env LC_ALL=C zfs list -H -o name -r tank',
                       f'env LC_ALL=C zfs destroy {dataset}/data@zfs-auto-snap_daily-2026-11-01-0000',
                       'env LC_ALL=C zfs receive -s -u -o readonly=on -o com.sun:auto-snapshot=false '
                       f'{dataset}/data/x', f'env LC_ALL=C zfs send -R {dataset}/data@zfs-auto-snap_daily-2026-11-01-0000']:
            refused = pair.ssh(TARGET, ['ssh', '-T', '-o', 'BatchMode=yes', '-l', SEND_USER, CLIENT, attack], check=False)
            assert refused.returncode == 1 and 'refused' in refused.stderr, (attack, refused)
    finally:
        pair.sh(TARGET, f'zfs destroy -R -f {pull_root}', check=False)


def stamps_of(pair, name: str) -> dict[str, str]:
    out = pair.ssh(TARGET, ['zfs', 'get', '-H', '-p', '-r', '-t', 'snapshot', '-o', 'name,value', STAMP, name]).stdout
    return dict(line.split('\t') for line in out.splitlines())


def steer_pruning(pair, dataset: str) -> None:
    """The eviction attack: a flood of fresh snapshots, and a stream that would back-date what arrived before it."""
    replica = f'{root("a")}/{dataset}/data'
    now = int(pair.ssh(TARGET, ['date', '+%s']).stdout)
    day = 86400
    # as if they had arrived 20, 2 and 1 days ago (the server's own clock, set by its administrator here)
    for name, age in (('01', 20), ('02', 2), ('03', 1)):
        pair.ssh(TARGET, ['zfs', 'set', f'{STAMP}={now - age * day}', f'{replica}@zfs-auto-snap_daily-2026-11-{name}-0000'])
    arrived_before = stamps_of(pair, replica)

    # the attacker's flood: 10 fresh, validly named dailies (more than the 3 kept) in one incremental stream over the client's key ...
    pair.sh(CLIENT, f'for d in $(seq 4 13); do zfs snapshot -r '
                    f'{dataset}/data@zfs-auto-snap_daily-2026-12-$(printf %02d $((d % 28 + 1)))-$(printf %04d $d); done')
    # ... whose snapshot properties would back-date what arrived before it (a -R stream carries them)
    pair.sh(CLIENT, f'zfs set {STAMP}=1 {dataset}/data@zfs-auto-snap_daily-2026-11-02-0000 '
                    f'{dataset}/data@zfs-auto-snap_daily-2026-11-03-0000')
    newest = pair.sh(CLIENT, f'zfs list -H -o name -t snapshot -s createtxg -d 1 {dataset}/data | tail -1').stdout.strip()
    recv = 'env LC_ALL=C zfs receive -s -u -o readonly=on -o com.sun:auto-snapshot=false -o canmount=noauto'
    flood = as_client_stream(pair, f'zfs send -R -I @zfs-auto-snap_daily-2026-11-03-0000 {newest}', f'{recv} {replica}')
    assert flood.returncode == 0, flood
    after_flood = stamps_of(pair, replica)
    # nothing that was there has a new arrival time; everything new arrived now
    assert {k: after_flood[k] for k in arrived_before} == arrived_before
    fresh = [int(v) for k, v in after_flood.items() if k not in arrived_before]
    assert len(fresh) >= 10 and all(v >= now for v in fresh), after_flood

    # the server's retention, by its clock: keep 3 dailies (3 days); the flood evicts nothing inside the window
    before_prune = snap_guids(pair, replica, host=TARGET)
    res = pair.ssh(TARGET, [BIN, 'retain', '--root', root('a'), '--policy', 'daily=3', '--json'], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    after = snap_guids(pair, replica, host=TARGET)
    # only what arrived 20 days ago goes; the child's first dailies arrived with the push, inside the window
    assert set(before_prune) - set(after) == {'@zfs-auto-snap_daily-2026-11-01-0000'}
    for kept in ('02', '03'):
        assert f'@zfs-auto-snap_daily-2026-11-{kept}-0000' in after
    # a run that would destroy more than its cap destroys nothing
    old = [f'{replica}{name}' for name in after if name.startswith('@zfs-auto-snap_daily-2026-12')]
    pair.ssh(TARGET, ['zfs', 'set', f'{STAMP}={now - 30 * day}', *old])
    capped = pair.ssh(TARGET, [BIN, 'retain', '--root', root('a'), '--policy', 'daily=3', '--max-destroy', '5'],
                      check=False)
    assert capped.returncode == 1 and 'more than max_destroy (5)' in capped.stderr, capped
    assert snap_guids(pair, replica, host=TARGET) == after
