# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: autosnap_args
short_description: Check autosnap options with the engine's rules and return its command line
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Validates a mapping of the options of the M(pyzfsautosnap.zfs.zfs_autosnap) module on the controller, with the
    same code and the same messages as the module and the C(pyzfsautosnap autosnap) command line, and returns the
    arguments of that command line (C(autosnap) followed by C(--option=value) items).
  - Bad input fails the task with the engine's message, before anything is written anywhere.
  - The roles use it for the argument files of their systemd units.
positional: _input
options:
  _input:
    description:
      - The options, named as the module's (for example C(roots), C(policy), C(prefix)).
      - Options left out get the module's defaults; an empty O(_input.roots) or O(_input.policy) is an error.
    type: dict
    required: true
  extra_args:
    description:
      - Further command line arguments, appended after the generated ones; they are parsed and checked as well.
    type: list
    elements: str
    default: []
  per_label:
    description:
      - Return one command line per label of the policy, as a mapping of label to arguments in schedule order
        (V(frequent) first), each taking and pruning only its label.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: The command line of a daily run
  ansible.builtin.debug:
    msg: "{{ {'roots': ['tank/home'], 'label': 'daily', 'keep': 7} | pyzfsautosnap.zfs.autosnap_args }}"
  # ['autosnap', '--root=tank/home', '--policy=daily=7']

- name: One command line per label
  ansible.builtin.set_fact:
    runs: "{{ {'roots': ['tank'], 'policy': {'weekly': 4, 'hourly': 24}} | pyzfsautosnap.zfs.autosnap_args(per_label=true) }}"
  # {'hourly': ['autosnap', '--root=tank', '--label=hourly', '--keep=24'], 'weekly': [...]}
'''

RETURN = r'''
_value:
  description:
    - The arguments of C(pyzfsautosnap autosnap), starting with C(autosnap); with O(per_label=true) a mapping of
      label to such a list.
  type: raw
'''

import typing as t  # noqa: E402

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _autosnap_options  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._options import parse_argv, to_argv  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError  # noqa: E402


def _checked(values: dict[str, t.Any], extra_args: list[str]) -> list[str]:
    schema = _autosnap_options.SCHEMA
    args = to_argv(schema, values) + [str(arg) for arg in extra_args]
    # what the command line will make of it, extra arguments included
    parse_argv(schema, args)
    return [schema.name] + args


def autosnap_args(options: t.Mapping[str, t.Any], extra_args: list[str] | None = None,
                  per_label: bool = False) -> list[str] | dict[str, list[str]]:
    if not isinstance(options, t.Mapping):
        raise AnsibleFilterError(f'autosnap_args expects a mapping of options, got {type(options).__name__}')
    try:
        values = _autosnap_options.normalise(dict(options))
        if not per_label:
            return _checked(values, list(extra_args or []))
        return {label: _checked(dict(values, policy=None, label=label, keep=keep), list(extra_args or []))
                for label, keep in values['policy'].items()}
    except ValidationError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {'autosnap_args': autosnap_args}
