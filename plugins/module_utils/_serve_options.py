# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options of ``serve``, the forced command of a replication key, once for the command line and the roles."""

from __future__ import annotations

import typing as t

from ._options import Option, Schema, to_argv, validate
from ._serve_parse import Refused, check_name
from ._types import ValidationError
from ._validate import reject_shell_metachars

NO_ROOTS = 'roots must name at least one dataset: a key confined to nothing may do nothing'


def valid_roots(value: list[t.Any], what: str) -> list[str]:
    try:
        return [check_name(str(item), 'dataset') for item in value]
    except Refused as exc:
        raise ValidationError(f'{what}: {exc}') from None


def distinct_roots(values: dict[str, t.Any]) -> dict[str, t.Any]:
    roots = values['roots']
    for a in roots:
        for b in roots:
            if a != b and a.startswith(b + '/'):
                raise ValidationError(f'roots: {a} lies inside {b}; name the outer one only')
    return dict(values, roots=list(dict.fromkeys(roots)))


SCHEMA = Schema(
    name='serve',
    help='The forced command of a replication key (authorized_keys command="…"): runs the one command in '
         'SSH_ORIGINAL_COMMAND if it is one the engine sends, confined to the roots, and refuses anything else.',
    options=(
        Option('roots', 'list', elements='str', flags=('--root',), metavar='DATASET', required=True, empty=NO_ROOTS,
               validator=valid_roots,
               help='the only datasets (with their descendants) this key may touch; repeat for several'),
        Option('send', 'bool', default=False,
               help='the sending side of a pull (listings, sends, holds); the default is the receiving side of a push'),
        Option('zfs_path', 'str', default='zfs', validator=reject_shell_metachars, help='the zfs command'),
    ),
    checks=(distinct_roots,),
)


def normalise(raw: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return validate(SCHEMA, raw)


def args(values: t.Mapping[str, t.Any]) -> list[str]:
    """The command line options for *values*, checked: what a role puts after ``serve``."""
    return to_argv(SCHEMA, normalise(values))
