# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: replicate_args
short_description: Check replicate options with the engine's rules and return its command line
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Validates a mapping of the options of the M(pyzfsautosnap.zfs.zfs_replicate) module on the controller, with the
    same code and the same messages as the module and the C(pyzfsautosnap replicate) command line, and returns the
    arguments of that command line (C(replicate), the datasets, then C(--option=value) items).
  - Bad input fails the task with the engine's message, before anything is written anywhere.
  - The roles use it for the argument files of their systemd units.
positional: _input
options:
  _input:
    description:
      - The options, named as the module's (for example C(datasets), C(target_root), C(target_host)).
      - Options left out get the module's defaults; an empty O(_input.labels) is an error.
    type: dict
    required: true
  extra_args:
    description:
      - Further command line arguments, appended after the generated ones; they are parsed and checked as well.
    type: list
    elements: str
    default: []
'''

EXAMPLES = r'''
- name: The command line of a push
  ansible.builtin.debug:
    msg: >-
      {{ {'datasets': ['tank/home'], 'target_host': 'backup.example.org', 'target_root': 'zfsbackups/client1',
          'recursive': true} | pyzfsautosnap.zfs.replicate_args }}
  # ['replicate', 'tank/home', '--target-root=zfsbackups/client1', '--target-host=backup.example.org', '--recursive']
'''

RETURN = r'''
_value:
  description: The arguments of C(pyzfsautosnap replicate), starting with C(replicate).
  type: list
  elements: str
'''

import typing as t  # noqa: E402

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _replicate_options  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._options import parse_argv, to_argv  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError  # noqa: E402


def replicate_args(options: t.Mapping[str, t.Any], extra_args: list[str] | None = None) -> list[str]:
    if not isinstance(options, t.Mapping):
        raise AnsibleFilterError(f'replicate_args expects a mapping of options, got {type(options).__name__}')
    schema = _replicate_options.SCHEMA
    try:
        args = to_argv(schema, _replicate_options.normalise(dict(options))) + [str(a) for a in extra_args or []]
        # what the command line will make of it, extra arguments included
        parse_argv(schema, args)
    except ValidationError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return [schema.name] + args


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {'replicate_args': replicate_args}
