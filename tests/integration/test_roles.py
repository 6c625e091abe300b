# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The client and target roles applied by real ansible-playbook runs to a guest with real systemd and OpenZFS."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import typing as t

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GUEST = 'zfsguest'
CLIENT_ROLE = 'pyzfsautosnap.zfs.client'
TARGET_ROLE = 'pyzfsautosnap.zfs.target'
# the timers of this test must not fire while other tests use the guest
NEVER = '2099-01-01 00:00:00 UTC'
RECAP_RE = re.compile(rf'^{GUEST}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)
STATUS_RE = r'^(ok|changed|skipping|failed|fatal): \[' + GUEST + r'\]'

# In the full subset only (the newest series in CI): three role applications take 6 to 9 min under TCG,
# and every zfs command the roles cause is the engine's or community.general's, which the smoke subset
# runs on every series. `make integration ZFS_SERIES=2.1 INTEGRATION_SUBSET=full` runs it anywhere.


@dataclasses.dataclass
class RoleRun:
    rc: int
    changed: int
    failed: int
    output: str

    def task_status(self, role: str, name: str) -> str:
        """Status (ok, changed, skipping, failed) of the task *name* of *role*, from the default callback's output."""
        match = re.search(rf'^TASK \[{re.escape(role)} : {re.escape(name)}\][^\n]*\n(?:[^\n]*\n)*?{STATUS_RE}',
                          self.output, re.M)
        assert match, f'task {name!r} of {role} not found in:\n{self.output}'
        return match.group(1)


@pytest.fixture(scope='module')
def collection(tmp_path_factory) -> str:
    """A copy of the collection, so edits of the working tree during the test cannot show up as changes."""
    root = tmp_path_factory.mktemp('collection')
    dest = root / 'ansible_collections' / 'pyzfsautosnap' / 'zfs'
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for part in ('meta', 'plugins', 'roles'):
        shutil.copytree(os.path.join(REPO, part), dest / part, ignore=ignore)
    shutil.copy(os.path.join(REPO, 'galaxy.yml'), dest / 'galaxy.yml')
    return str(root)


def apply_roles(bed, collections: str, roles: t.Sequence[tuple[str, dict[str, t.Any]]]) -> RoleRun:
    """Apply *roles* (name, variables) in one play on the guest."""
    play = [{'name': 'roles', 'hosts': GUEST, 'gather_facts': False,
             'roles': [{'role': name, 'vars': variables} for name, variables in roles]}]
    with tempfile.TemporaryDirectory(prefix='pyzfsautosnap-roles-') as tmp:
        path = os.path.join(tmp, 'play.yml')
        with open(path, 'w') as fh:
            yaml.safe_dump(play, fh, sort_keys=False)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
                   ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_PIPELINING='1', ANSIBLE_LOCALHOST_WARNING='0',
                   ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default', ANSIBLE_DISPLAY_SKIPPED_HOSTS='1',
                   ANSIBLE_PYTHON_INTERPRETER='/usr/bin/python3', **bed.ansible_env())
        proc = subprocess.run(['ansible-playbook', '-i', bed.inventory, path], capture_output=True, text=True, env=env,
                              timeout=1800, stdin=subprocess.DEVNULL, check=False)
    output = proc.stdout + proc.stderr
    recap = RECAP_RE.search(output)
    assert recap, f'no play recap (rc={proc.returncode}):\n{output}'
    return RoleRun(proc.returncode, int(recap.group(2)), int(recap.group(4)), output)


def snapshots(bed, root: str) -> list[str]:
    return bed.ssh(GUEST, ['zfs', 'list', '-H', '-o', 'name', '-t', 'snapshot', '-r', root]).stdout.split()


def guids(bed, root: str) -> dict[str, str]:
    """Snapshot guids under *root*, by name relative to it."""
    out = bed.ssh(GUEST, ['zfs', 'list', '-H', '-p', '-o', 'name,guid', '-t', 'snapshot', '-r', root]).stdout
    return {line.split('\t')[0][len(root):]: line.split('\t')[1] for line in out.splitlines()}


def journal(bed, unit: str) -> str:
    return bed.ssh(GUEST, ['journalctl', '--no-pager', '-n', '60', '-u', unit], check=False).stdout


def our_units(bed) -> list[str]:
    return bed.sh(GUEST, 'cd /etc/systemd/system && ls -d pyzfsautosnap-* 2>/dev/null || true').stdout.split()


def destroy_with_holds(bed, root: str) -> None:
    bed.sh(GUEST, f'''
        zfs list -H -o name {root} >/dev/null 2>&1 || exit 0
        zfs list -H -t snapshot -o name -r {root} | while read -r s; do
          zfs holds -H "$s" | while read -r n tag rest; do zfs release "$tag" "$s"; done
        done
        zfs destroy -R -f {root}
    ''', check=False)


def test_client_and_target_roles(bed, dataset, collection, zfs_features):
    name = dataset.split('/', 1)[1]
    target_root = f'zfsbackups/{name}'
    pull_name = f'{name}_pull'
    pull_root = f'zfsbackups/{pull_name}'
    bed.sh(GUEST, f'zfs create {dataset}/data && head -c 256K /dev/urandom > /{dataset}/data/a.bin')
    # the pull key exists before the first run, so the client role can authorize it in the same play
    pull_key = bed.sh(GUEST, '''
        install -d -m 755 /etc/pyzfsautosnap
        [ -e /etc/pyzfsautosnap/pull_id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C pull -f /etc/pyzfsautosnap/pull_id_ed25519
        cat /etc/pyzfsautosnap/pull_id_ed25519.pub
    ''').stdout.strip()
    localhost_key = bed.sh(GUEST, "grep '^localhost ' /root/.ssh/known_hosts").stdout.strip()
    pool_guid = bed.ssh(GUEST, ['zpool', 'get', '-H', '-o', 'value', 'guid', 'zfsbackups']).stdout.strip()
    client_vars = {
        'pyzfsautosnap_client_roots': [dataset],
        'pyzfsautosnap_client_policy': {'daily': 3, 'weekly': 2},
        'pyzfsautosnap_client_on_calendar': {'daily': NEVER, 'weekly': NEVER},
        'pyzfsautosnap_client_replicate': True,
        'pyzfsautosnap_client_replicate_target_host': 'localhost',
        'pyzfsautosnap_client_replicate_target_root': target_root,
        'pyzfsautosnap_client_replicate_labels': ['daily'],
        # the target role's user for the client named `name`
        'pyzfsautosnap_client_replicate_ssh_user': ('zfsrecv-' + name.lower())[:32],
        'pyzfsautosnap_client_replicate_on_calendar': NEVER,
        'pyzfsautosnap_client_send_user': 'zfssend',
        'pyzfsautosnap_client_send_authorized_keys': [pull_key],
        'pyzfsautosnap_client_send_from': '127.0.0.1,::1',
    }
    push_client = {'name': name, 'authorized_keys': ['{{ pyzfsautosnap_client_ssh_public_key }}'],
                   'retention': {'daily': 3}, 'retention_on_calendar': NEVER}
    pull_client = {'name': pull_name, 'pull': {'host': 'localhost', 'datasets': [dataset], 'labels': ['daily'],
                                               'on_calendar': NEVER}}
    target_vars = {
        'pyzfsautosnap_target_packages': [],  # mbuffer is in the image, and the guest has no package mirror
        # push_client has the key the client role created and published
        'pyzfsautosnap_target_clients': [push_client, pull_client],
        'pyzfsautosnap_target_pull_known_hosts': [localhost_key],
    }
    roles = [(CLIENT_ROLE, client_vars), (TARGET_ROLE, target_vars)]
    try:
        first = apply_roles(bed, collection, roles)
        assert first.rc == 0 and first.failed == 0, first.output
        # the existing pool is only looked at
        assert first.task_status(TARGET_ROLE, 'Check whether the backup pool exists') == 'ok'
        assert first.task_status(TARGET_ROLE, 'Import the backup pool') == 'skipping'
        assert first.task_status(TARGET_ROLE, 'Create the backup pool') == 'skipping'
        assert bed.ssh(GUEST, ['zpool', 'get', '-H', '-o', 'value', 'guid', 'zfsbackups']).stdout.strip() == pool_guid
        # the engine's bytecode is there for the users that cannot write it (receive, send and pull users)
        compiled = bed.sh(GUEST, 'ls /usr/local/lib/pyzfsautosnap/pyzfsautosnap/__pycache__').stdout.split()
        assert any(name.startswith('_serve.') and name.endswith('.pyc') for name in compiled), compiled

        second = apply_roles(bed, collection, roles)
        assert second.rc == 0 and second.failed == 0, second.output
        assert second.changed == 0, second.output

        timers = ['pyzfsautosnap-autosnap@daily.timer', 'pyzfsautosnap-autosnap@weekly.timer',
                  'pyzfsautosnap-replicate.timer', f'pyzfsautosnap-pull@{pull_name}.timer',
                  f'pyzfsautosnap-retain@{name}.timer']
        listed = bed.ssh(GUEST, ['systemctl', 'list-timers', '--all', '--no-legend', '--no-pager']).stdout
        for timer in timers:
            assert timer in listed, listed
        states = bed.ssh(GUEST, ['systemctl', 'is-enabled', *timers]).stdout.split()
        assert states == ['enabled'] * len(timers)
        assert bed.ssh(GUEST, ['systemctl', 'is-active', *timers]).stdout.split() == ['active'] * len(timers)

        # one run of the daily service: a daily snapshot of the root and its child, nothing else
        today = bed.ssh(GUEST, ['date', '-u', '+%Y-%m-%d']).stdout.strip()
        before_pool = set(bed.ssh(GUEST, ['zfs', 'list', '-H', '-o', 'name', '-t', 'snapshot', '-d', '1', 'tank']).stdout.split())
        run = bed.ssh(GUEST, ['systemctl', 'start', 'pyzfsautosnap-autosnap@daily.service'], check=False)
        assert run.returncode == 0, run.stderr + journal(bed, 'pyzfsautosnap-autosnap@daily.service')
        snaps = snapshots(bed, dataset)
        daily = re.compile(rf'^{re.escape(dataset)}(/data)?@zfs-auto-snap_daily-{today}-\d{{4}}$')
        assert len(snaps) == 2 and all(daily.match(s) for s in snaps), snaps
        assert {s.split('@')[1] for s in snaps} == {snaps[0].split('@')[1]}  # one name: taken atomically
        after_pool = set(bed.ssh(GUEST, ['zfs', 'list', '-H', '-o', 'name', '-t', 'snapshot', '-d', '1', 'tank']).stdout.split())
        assert after_pool == before_pool

        # push replication over SSH as the client's own receive user, through the forced command
        recv_user = ('zfsrecv-' + name.lower())[:32]
        authorized = bed.sh(GUEST, f'cat ~{recv_user}/.ssh/authorized_keys').stdout
        forced = f'restrict,command="/usr/local/sbin/pyzfsautosnap serve --root={target_root}"'
        assert re.search(rf'^{re.escape(forced)} ssh-ed25519 \S+ pyzfsautosnap@zfsguest$', authorized, re.M), authorized
        allowed = bed.ssh(GUEST, ['zfs', 'allow', target_root]).stdout
        grant = re.search(rf'user {re.escape(recv_user)} (\S+)', allowed)
        assert grant, allowed
        granted = set(grant.group(1).split(','))
        assert 'destroy' not in granted and 'rollback' not in granted, allowed
        assert granted & {'receive', 'receive:append'}, allowed
        if 'receive:append' in zfs_features:
            assert 'receive' not in granted, allowed
        run = bed.ssh(GUEST, ['systemctl', 'start', 'pyzfsautosnap-replicate.service'], check=False)
        assert run.returncode == 0, run.stderr + journal(bed, 'pyzfsautosnap-replicate.service')
        replica = f'{target_root}/{dataset}'
        assert guids(bed, replica) == guids(bed, dataset)
        assert bed.ssh(GUEST, ['zfs', 'get', '-H', '-o', 'value', 'readonly', f'{replica}/data']).stdout.strip() == 'on'
        # the server's own retention: everything that arrived is stamped, nothing inside the window goes
        stamps = bed.ssh(GUEST, ['zfs', 'get', '-H', '-p', '-r', '-t', 'snapshot', '-o', 'value', 'pyzfsautosnap:received',
                                 replica]).stdout.split()
        assert stamps and all(v.isdigit() for v in stamps), stamps
        retain_unit = f'pyzfsautosnap-retain@{name}.service'
        run = bed.ssh(GUEST, ['systemctl', 'start', retain_unit], check=False)
        assert run.returncode == 0, run.stderr + journal(bed, retain_unit)
        assert guids(bed, replica) == guids(bed, dataset)

        # pull as the unprivileged pull user, logged in as the client's send user
        authorized = bed.sh(GUEST, 'cat ~zfssend/.ssh/authorized_keys').stdout
        send_forced = f'restrict,command="/usr/local/sbin/pyzfsautosnap serve --root={dataset} --send",from="127.0.0.1,::1"'
        assert f'{send_forced} {pull_key}' in authorized, authorized
        assert 'user zfssend' in bed.ssh(GUEST, ['zfs', 'allow', dataset]).stdout
        assert 'user zfspull' in bed.ssh(GUEST, ['zfs', 'allow', pull_root]).stdout
        pull_unit = f'pyzfsautosnap-pull@{pull_name}.service'
        assert bed.ssh(GUEST, ['systemctl', 'show', '-P', 'User', pull_unit]).stdout.strip() == 'zfspull'
        run = bed.ssh(GUEST, ['systemctl', 'start', pull_unit], check=False)
        assert run.returncode == 0, run.stderr + journal(bed, pull_unit)
        assert guids(bed, f'{pull_root}/{dataset}') == guids(bed, dataset)

        # no snapshots, no replication, and no more pulling leave no timer behind
        # (without replication the client role publishes no key, so it is given as it is)
        client_key = bed.ssh(GUEST, ['cat', '/etc/pyzfsautosnap/id_ed25519.pub']).stdout.strip()
        off = apply_roles(bed, collection, [
            (CLIENT_ROLE, {**client_vars, 'pyzfsautosnap_client_autosnap': False, 'pyzfsautosnap_client_replicate': False}),
            (TARGET_ROLE, {**target_vars, 'pyzfsautosnap_target_clients': [
                {'name': name, 'authorized_keys': [client_key]}]})])
        assert off.rc == 0 and off.failed == 0, off.output
        # a client that still pushes keeps the server's clean-up of its root (stamps, stale resumable receives)
        assert our_units(bed) == ['pyzfsautosnap-autosnap@.service', 'pyzfsautosnap-pull@.service',
                                  'pyzfsautosnap-retain@.service', f'pyzfsautosnap-retain@{name}.timer']
        left = bed.ssh(GUEST, ['ls', '/etc/pyzfsautosnap']).stdout.split()
        assert [f for f in left if f.endswith('.json')] == [f'retain-{name}.json'], left
        assert '--policy' not in bed.ssh(GUEST, ['cat', f'/etc/pyzfsautosnap/retain-{name}.json']).stdout
        listed = bed.ssh(GUEST, ['systemctl', 'list-timers', '--all', '--no-legend', '--no-pager']).stdout
        assert [line.split()[-2] for line in listed.splitlines() if 'pyzfsautosnap' in line] == \
            [f'pyzfsautosnap-retain@{name}.timer'], listed
    finally:
        bed.sh(GUEST, '''
            for unit in /etc/systemd/system/pyzfsautosnap-*.timer; do
              [ -e "$unit" ] && systemctl disable --now "${unit##*/}"
            done
            true
        ''', check=False)
        destroy_with_holds(bed, pull_root)
