# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the roles' argument filters share: the engine checks, Ansible reports."""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError


def checked_args(name: str, options: t.Any, build: t.Callable[[dict[str, t.Any]], list[str]]) -> list[str]:
    """``build(options)``, the engine's command line for *options*; its ValidationError as the filter's error."""
    if not isinstance(options, t.Mapping):
        raise AnsibleFilterError(f'{name} expects a mapping of options, got {type(options).__name__}')
    try:
        return build(dict(options))
    except ValidationError as exc:
        raise AnsibleFilterError(str(exc)) from None
