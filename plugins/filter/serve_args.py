# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: serve_args
short_description: Check the options of the forced command C(pyzfsautosnap serve) and return its command line
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Validates the options of C(pyzfsautosnap serve), the forced command of a replication key, with the engine's own
    rules and messages, and returns its arguments (C(serve), then C(--option=value) items).
  - Bad input (no root, a root that is not a dataset name, one root inside another) fails the task before anything
    is written.
  - The roles use it for the C(command="...") option of the keys in C(authorized_keys).
positional: _input
options:
  _input:
    description:
      - The options C(roots) (the only datasets the key may touch), C(send) (the sending side of a pull) and
        C(zfs_path).
    type: dict
    required: true
'''

EXAMPLES = r'''
- name: The forced command of a client's key on the backup server
  ansible.builtin.debug:
    msg: "{{ {'roots': ['zfsbackups/client1']} | pyzfsautosnap.zfs.serve_args }}"
  # ['serve', '--root=zfsbackups/client1']
'''

RETURN = r'''
_value:
  description: The arguments of C(pyzfsautosnap serve), starting with C(serve).
  type: list
  elements: str
'''

import typing as t  # noqa: E402

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _serve_options  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.plugin_utils._filter_args import checked_args  # noqa: E402


def serve_args(options: t.Mapping[str, t.Any]) -> list[str]:
    return checked_args('serve_args', options, lambda values: [_serve_options.SCHEMA.name] + _serve_options.args(values))


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {'serve_args': serve_args}
