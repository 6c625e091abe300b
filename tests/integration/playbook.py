# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs real ``ansible-playbook`` against test guests and returns the registered task results."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import typing as t

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINKROOT = os.path.join(REPO, '.build', 'link')


def collections_path() -> str:
    """Make the working tree importable as pyzfsautosnap.zfs without installing it."""
    link = os.path.join(LINKROOT, 'ansible_collections', 'pyzfsautosnap', 'zfs')
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link)
    return LINKROOT


@dataclasses.dataclass
class PlayResult:
    rc: int
    results: list[dict[str, t.Any]]
    output: str

    @property
    def result(self) -> dict[str, t.Any]:
        return self.results[0]


def run_play(bed, host: str, tasks: t.Sequence[dict[str, t.Any]], *, check: bool = False, diff: bool = False,
             extra_env: t.Mapping[str, str] | None = None, timeout: float = 1800) -> PlayResult:
    """Run *tasks* on *host*; each task's registered result is returned (failures do not stop the play)."""
    play_tasks = []
    names = []
    for index, given in enumerate(tasks):
        task = dict(given)
        task.setdefault('name', f'task {index}')
        task['register'] = f'r{index}'
        task['ignore_errors'] = True
        play_tasks.append(task)
        names.append(f'r{index}')
    with tempfile.TemporaryDirectory(prefix='pyzfsautosnap-play-') as tmp:
        out_path = os.path.join(tmp, 'results.json')
        dump = '{{ {' + ', '.join(f"'{n}': {n}" for n in names) + '} | to_json }}'
        play_tasks.append({'name': 'collect results', 'delegate_to': 'localhost', 'check_mode': False,
                           'ansible.builtin.copy': {'content': dump, 'dest': out_path, 'mode': '0600'}})
        playbook = [{'name': 'integration play', 'hosts': host, 'gather_facts': False, 'tasks': play_tasks}]
        pb_path = os.path.join(tmp, 'play.yml')
        with open(pb_path, 'w') as fh:
            yaml.safe_dump(playbook, fh, sort_keys=False)
        argv = ['ansible-playbook', '-i', bed.inventory, pb_path]
        if check:
            argv.append('--check')
        if diff:
            argv.append('--diff')
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
                   ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_PIPELINING='1', ANSIBLE_LOCALHOST_WARNING='0',
                   ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_PYTHON_INTERPRETER='/usr/bin/python3')
        env.update(bed.ansible_env())
        env.update(extra_env or {})
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        output = proc.stdout + proc.stderr
        if not os.path.exists(out_path):
            raise AssertionError(f'ansible-playbook produced no results (rc={proc.returncode}):\n{output}')
        with open(out_path) as fh:
            data = json.load(fh)
    return PlayResult(proc.returncode, [data[n] for n in names], output)
