# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: retain_args
short_description: Check the options of C(pyzfsautosnap retain) and return its command line
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Validates the options of C(pyzfsautosnap retain), a backup server's own pruning of what its clients pushed (by
    arrival on the server's clock), with the engine's own rules and messages, and returns its arguments (C(retain),
    then C(--option=value) items).
  - Bad input (no root, an empty policy, a keep below 1) fails the task before anything is written.
  - The target role uses it for the argument files of its retention timers.
positional: _input
options:
  _input:
    description:
      - The options C(roots), C(policy) (label to keep), C(max_destroy), C(prefix), C(separator),
        C(frequent_minutes), C(lock_dir), C(lock_timeout) and C(zfs_path); see C(pyzfsautosnap retain --help).
    type: dict
    required: true
'''

EXAMPLES = r'''
- name: The backup server's pruning of one client's replicas
  ansible.builtin.debug:
    msg: "{{ {'roots': ['zfsbackups/client1'], 'policy': {'daily': 31, 'weekly': 8}} | pyzfsautosnap.zfs.retain_args }}"
  # ['retain', '--root=zfsbackups/client1', '--policy=daily=31', '--policy=weekly=8']
'''

RETURN = r'''
_value:
  description: The arguments of C(pyzfsautosnap retain), starting with C(retain).
  type: list
  elements: str
'''

import typing as t  # noqa: E402

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _retain_options  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.plugin_utils._filter_args import checked_args  # noqa: E402


def retain_args(options: t.Mapping[str, t.Any]) -> list[str]:
    return checked_args('retain_args', options, _retain_options.args)


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {'retain_args': retain_args}
