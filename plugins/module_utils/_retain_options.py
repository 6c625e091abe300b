# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options of ``retain``, a backup server's own pruning of what clients pushed, once for the CLI and the roles."""

from __future__ import annotations

import typing as t

from . import _naming as naming
from ._lock import DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT
from ._options import Option, Schema, to_argv, validate
from ._serve_options import NO_ROOTS, distinct_roots, valid_roots
from ._validate import reject_shell_metachars, validate_int, validate_lock_timeout

EMPTY_POLICY = 'an empty policy would prune nothing; give labels with keep counts, e.g. daily=31, or leave it out'
DEFAULT_MAX_DESTROY = 100
DEFAULT_STALE_RESUME_HOURS = 24
DEFAULT_STATE_DIR = '/var/lib/pyzfsautosnap'


def _policy(value: dict[str, t.Any], what: str) -> dict[str, int]:
    checked = {}
    for label, keep in value.items():
        naming.validate_label(label)
        checked[label] = validate_int(keep, f'{what}: keep of label {label!r}', 1)
    return {label: checked[label] for label in naming.LABELS if label in checked}


def _at_least_one(value: int, what: str) -> int:
    return validate_int(value, what, 1)


SCHEMA = Schema(
    name='retain',
    help='Prune the replicas under the roots by when they arrived on this server (its own clock), never by what a '
         'client chose: a snapshot stays while it is one of the newest KEEP of its label or arrived less than KEEP '
         'periods ago.',
    options=(
        Option('roots', 'list', elements='str', flags=('--root',), metavar='DATASET', required=True, empty=NO_ROOTS,
               validator=valid_roots, help='target root of a client; repeat for several'),
        Option('policy', 'dict', metavar='LABEL=KEEP', empty=EMPTY_POLICY, validator=_policy,
               help='label and how many periods (and at least how many snapshots) to keep; without it nothing is '
                    'pruned, only arrivals stamped and stale resumable receives discarded'),
        Option('max_destroy', 'int', default=DEFAULT_MAX_DESTROY, validator=_at_least_one,
               help='a run that would destroy more snapshots destroys none and fails; raise it to confirm'),
        Option('stale_resume_hours', 'int', default=DEFAULT_STALE_RESUME_HOURS, validator=_at_least_one,
               help='discard a resumable receive whose token has not changed for this long (zfs receive -A)'),
        Option('state_dir', 'path', default=DEFAULT_STATE_DIR, validator=reject_shell_metachars,
               help='where the first sighting of each resume token is kept'),
        Option('prefix', 'str', default=naming.DEFAULT_PREFIX, help='first part of the snapshot names'),
        Option('separator', 'str', default=naming.DEFAULT_SEPARATOR, flags=('--sep',),
               help='one character between prefix and label'),
        Option('frequent_minutes', 'int', default=naming.DEFAULT_FREQUENT_MINUTES,
               help='length of the frequent period in minutes'),
        Option('lock_dir', 'path', default=DEFAULT_LOCK_DIR, validator=reject_shell_metachars,
               help='directory of the lock files'),
        Option('lock_timeout', 'float', default=DEFAULT_LOCK_TIMEOUT, validator=validate_lock_timeout,
               help='seconds to wait for another run on the same roots'),
        Option('zfs_path', 'str', default='zfs', validator=reject_shell_metachars, help='the zfs command'),
    ),
    checks=(distinct_roots,),
)


def normalise(raw: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    values = validate(SCHEMA, raw)
    naming.validate_prefix(values['prefix'])
    naming.validate_separator(values['separator'])
    naming.validate_frequent_minutes(values['frequent_minutes'])
    return values


def args(values: t.Mapping[str, t.Any]) -> list[str]:
    """``retain`` and its command line options for *values*, checked: what a role's timer runs."""
    return [SCHEMA.name] + to_argv(SCHEMA, normalise(values))
