# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Bad role input fails in the roles' validation tasks, with the engine's own message, before anything is written.

No guest: one ansible-playbook run on the controller (connection local) applies the roles once per bad value,
each inside block/rescue, with every path the roles write to pointed into a temporary directory.
It does not depend on the OpenZFS series, so it is not in the smoke subset: it runs once, with the full suite.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import typing as t

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT_ROLE = 'pyzfsautosnap.zfs.client'
TARGET_ROLE = 'pyzfsautosnap.zfs.target'
CLIENT_CHECK = 'Check the snapshot and replication options with the engine'
TARGET_CHECK = 'Check the pull settings'

PUSH = {'pyzfsautosnap_client_replicate': True, 'pyzfsautosnap_client_replicate_target_host': 'backup'}
REPLICATE = {'datasets': ['tank/a'], 'target_root': 'zfsbackups/c1', 'target_host': 'backup'}
AUTOSNAP = {'roots': ['tank/a'], 'policy': {'daily': 3}}
PULL = {'host': 'client1', 'datasets': ['tank/a']}
PULLED = {'datasets': ['tank/a'], 'target_root': 'zfsbackups/c1', 'source_host': 'client1'}

# (case, role, variables over the valid ones, entry point, the engine's input that fails the same way)
CASES: list[tuple[str, str, dict[str, t.Any], str, t.Any]] = [
    ('shell in a root', CLIENT_ROLE, {'pyzfsautosnap_client_roots': ['tank/a;rm -rf /']},
     'autosnap', dict(AUTOSNAP, roots=['tank/a;rm -rf /'])),
    ('root names a snapshot', CLIENT_ROLE, {'pyzfsautosnap_client_roots': ['tank/a@x']},
     'autosnap', dict(AUTOSNAP, roots=['tank/a@x'])),
    ('empty roots', CLIENT_ROLE, {'pyzfsautosnap_client_roots': []}, 'autosnap', dict(AUTOSNAP, roots=[])),
    ('no roots', CLIENT_ROLE, {'pyzfsautosnap_client_roots': None}, 'autosnap', dict(AUTOSNAP, roots=None)),
    ('roots and all pools', CLIENT_ROLE, {'pyzfsautosnap_client_all_pools': True},
     'autosnap', dict(AUTOSNAP, all_pools=True)),
    ('empty policy', CLIENT_ROLE, {'pyzfsautosnap_client_policy': {}}, 'autosnap', dict(AUTOSNAP, policy={})),
    ('bad label', CLIENT_ROLE, {'pyzfsautosnap_client_policy': {'sometimes': 3}},
     'autosnap', dict(AUTOSNAP, policy={'sometimes': 3})),
    ('negative keep', CLIENT_ROLE, {'pyzfsautosnap_client_policy': {'daily': -1}},
     'autosnap', dict(AUTOSNAP, policy={'daily': -1})),
    ('keep not a number', CLIENT_ROLE, {'pyzfsautosnap_client_policy': {'daily': 'many'}},
     'autosnap', dict(AUTOSNAP, policy={'daily': 'many'})),
    ('bad prefix', CLIENT_ROLE, {'pyzfsautosnap_client_prefix': 'a b'}, 'autosnap', dict(AUTOSNAP, prefix='a b')),
    ('bad separator', CLIENT_ROLE, {'pyzfsautosnap_client_separator': '__'},
     'autosnap', dict(AUTOSNAP, separator='__')),
    ('frequent slot not dividing 60', CLIENT_ROLE, {'pyzfsautosnap_client_frequent_minutes': 7},
     'autosnap', dict(AUTOSNAP, frequent_minutes=7)),
    ('empty exclude pattern', CLIENT_ROLE, {'pyzfsautosnap_client_exclude': ['']}, 'autosnap', dict(AUTOSNAP, exclude=[''])),
    ('unknown extra argument', CLIENT_ROLE, {'pyzfsautosnap_client_autosnap_extra_args': ['--frobnicate']},
     'autosnap-argv', ['--frobnicate']),
    ('bad host', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_target_host='backup;id'),
     'replicate', dict(REPLICATE, target_host='backup;id')),
    ('host read as an option', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_target_host='-oProxyCommand=id'),
     'replicate', dict(REPLICATE, target_host='-oProxyCommand=id')),
    ('no host', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_target_host=''),
     'replicate', dict(REPLICATE, target_host='')),
    ('bad target root', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_target_root='zfsbackups/a b'),
     'replicate', dict(REPLICATE, target_root='zfsbackups/a b')),
    ('empty datasets', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_datasets=[]),
     'replicate', dict(REPLICATE, datasets=[])),
    ('empty label filter', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_labels=[]),
     'replicate', dict(REPLICATE, labels=[])),
    ('unknown label to replicate', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_labels=['minutely']),
     'replicate', dict(REPLICATE, labels=['minutely'])),
    ('target keep of 0', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_target_retention={'daily': 0}),
     'replicate', dict(REPLICATE, target_retention={'daily': 0})),
    ('bad ssh user', CLIENT_ROLE, dict(PUSH, pyzfsautosnap_client_replicate_ssh_user='a b'),
     'replicate', dict(REPLICATE, ssh_user='a b')),
    ('pull: empty label filter', TARGET_ROLE, {'pull': dict(PULL, labels=[])}, 'replicate', dict(PULLED, labels=[])),
    ('pull: shell in a dataset', TARGET_ROLE, {'pull': dict(PULL, datasets=['tank/a;rm -rf /'])},
     'replicate', dict(PULLED, datasets=['tank/a;rm -rf /'])),
    ('pull: host read as an option', TARGET_ROLE, {'pull': dict(PULL, host='-oProxyCommand=id')},
     'replicate', dict(PULLED, source_host='-oProxyCommand=id')),
]


def client_vars(tmp: str) -> dict[str, t.Any]:
    return {
        'pyzfsautosnap_client_python': '/usr/bin/python3',
        'pyzfsautosnap_client_lib_dir': f'{tmp}/lib',
        'pyzfsautosnap_client_bin_path': f'{tmp}/bin/pyzfsautosnap',
        'pyzfsautosnap_client_config_dir': f'{tmp}/etc',
        'pyzfsautosnap_client__unit_dir': f'{tmp}/units',
        'pyzfsautosnap_client_roots': ['tank/a'],
        'pyzfsautosnap_client_policy': {'daily': 3},
        'pyzfsautosnap_client_replicate_known_hosts': ['backup ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample'],
    }


def target_vars(tmp: str, pull: dict[str, t.Any]) -> dict[str, t.Any]:
    return {
        'pyzfsautosnap_target_python': '/usr/bin/python3',
        'pyzfsautosnap_target_lib_dir': f'{tmp}/lib',
        'pyzfsautosnap_target_bin_path': f'{tmp}/bin/pyzfsautosnap',
        'pyzfsautosnap_target_config_dir': f'{tmp}/etc',
        'pyzfsautosnap_target__unit_dir': f'{tmp}/units',
        'pyzfsautosnap_target_packages': [],
        'pyzfsautosnap_target_clients': [{'name': 'c1', 'pull': pull}],
        'pyzfsautosnap_target_pull_known_hosts': ['client1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample'],
    }


def playbook(tmp: str, results: str) -> list[dict[str, t.Any]]:
    tasks: list[dict[str, t.Any]] = [{'name': 'Nothing collected yet', 'ansible.builtin.set_fact': {'collected': []}}]
    for case, role, overrides, _entry, _input in CASES:
        if role == CLIENT_ROLE:
            variables = {**client_vars(tmp), **overrides}
        else:
            variables = target_vars(tmp, overrides['pull'])
        record = {'case': case, 'task': '{{ ansible_failed_task.name }}', 'result': '{{ ansible_failed_result }}'}
        tasks.append({
            'name': case,
            'block': [
                {'name': f'Apply {role}', 'ansible.builtin.include_role': {'name': role}, 'vars': variables},
                {'ansible.builtin.set_fact': {'collected': '{{ collected + [passed] }}'},
                 'vars': {'passed': {'case': case, 'task': 'none'}}},
            ],
            'rescue': [{'ansible.builtin.set_fact': {'collected': '{{ collected + [record] }}'}, 'vars': {'record': record}}],
        })
    # good input passes the same checks, and they hand the templates the engine's argument lists
    tasks.append({'name': 'Check good input', 'ansible.builtin.include_role': {'name': CLIENT_ROLE, 'tasks_from': 'validate'},
                  'vars': {**client_vars(tmp), **PUSH, 'pyzfsautosnap_client_policy': {'weekly': 2, 'daily': 3}}})
    tasks.append({'name': 'Write what was collected', 'ansible.builtin.copy': {
        'content': "{{ {'bad': collected, 'autosnap': pyzfsautosnap_client__autosnap_args,"
                   " 'replicate': pyzfsautosnap_client__replicate_args} | to_json }}", 'dest': results, 'mode': '0644'}})
    return [{'name': 'bad role input', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False, 'tasks': tasks}]


def strings(value: t.Any) -> t.Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.fixture(scope='module')
def collection(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp('collection')
    dest = root / 'ansible_collections' / 'pyzfsautosnap' / 'zfs'
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for part in ('meta', 'plugins', 'roles'):
        shutil.copytree(os.path.join(REPO, part), dest / part, ignore=ignore)
    shutil.copy(os.path.join(REPO, 'galaxy.yml'), dest / 'galaxy.yml')
    return str(root)


def engine_message(collection: str, entry: str, given: t.Any) -> str:
    sys.path.insert(0, collection)
    try:
        utils = 'ansible_collections.pyzfsautosnap.zfs.plugins.module_utils'
        errors = importlib.import_module(f'{utils}._types')
        with pytest.raises(errors.ValidationError) as info:
            if entry == 'autosnap-argv':
                schema = importlib.import_module(f'{utils}._autosnap_options').SCHEMA
                importlib.import_module(f'{utils}._options').parse_argv(schema, given)
            else:
                importlib.import_module(f'{utils}._{entry}_options').normalise(given)
        return str(info.value)
    finally:
        sys.path.remove(collection)


def test_bad_role_input_fails_in_validation_with_the_engines_message(collection: str, tmp_path: t.Any) -> None:
    tmp = str(tmp_path / 'host')
    results = str(tmp_path / 'collected.json')
    play = str(tmp_path / 'play.yml')
    with open(play, 'w', encoding='utf-8') as fh:
        yaml.safe_dump(playbook(tmp, results), fh, sort_keys=False)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collection, ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run(['ansible-playbook', '-i', 'localhost,', play], capture_output=True, text=True, env=env,
                          timeout=900, stdin=subprocess.DEVNULL, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    with open(results, encoding='utf-8') as fh:
        written = json.load(fh)
    collected = {item['case']: item for item in written['bad']}
    assert list(collected) == [case for case, *_rest in CASES], output
    for case, role, _overrides, entry, given in CASES:
        item = collected[case]
        expected = engine_message(collection, entry, given)
        assert item['task'] == (CLIENT_CHECK if role == CLIENT_ROLE else TARGET_CHECK), (case, item)
        assert any(expected in text for text in strings(item['result'])), (case, expected, item)
    assert written['autosnap'] == {
        'daily': ['autosnap', '--root=tank/a', '--label=daily', '--keep=3', '--lock-timeout=900.0'],
        'weekly': ['autosnap', '--root=tank/a', '--label=weekly', '--keep=2', '--lock-timeout=900.0']}
    assert written['replicate'] == [
        'replicate', 'tank/a', '--target-root=zfsbackups/localhost', '--target-host=backup', '--recursive',
        '--ssh-user=zfsrecv-localhost', f'--ssh-identity-file={tmp}/etc/id_ed25519', f'--ssh-known-hosts-file={tmp}/etc/known_hosts']
    # nothing was written: no engine, no argument file, no unit
    assert not os.path.exists(tmp) or not [files for _dir, _dirs, files in os.walk(tmp) if files], list(os.walk(tmp))
