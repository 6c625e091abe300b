# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options of ``autosnap``, once, for the module, the command line and the roles."""

from __future__ import annotations

import typing as t

from . import _naming as naming
from ._autosnap_plan import EMPTY_POLICY, NO_ROOTS, AutosnapConfig, make_config
from ._lock import DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT
from ._options import Option, Schema, to_argv, validate
from ._validate import reject_shell_metachars, validate_lock_timeout

# what make_config takes; the rest says how to run (locks, the zfs command)
CONFIG_OPTIONS = ('roots', 'all_pools', 'recursive', 'exclude', 'label', 'keep', 'policy', 'prefix', 'separator',
                  'frequent_minutes', 'default_exclude', 'skip_unchanged', 'prune', 'snapshot')


def _config(values: dict[str, t.Any]) -> dict[str, t.Any]:
    # make_config holds the rules; the mapping it stands for is what every front end passes on
    config = make_config(**{name: values[name] for name in CONFIG_OPTIONS})
    return dict(values, roots=list(config.roots) or None, exclude=list(config.exclude), policy=dict(config.policy),
                label=None, keep=None)


SCHEMA = Schema(
    name='autosnap',
    help='Take due zfs-auto-snapshot style snapshots and prune by retention policy.',
    options=(
        Option('roots', 'list', elements='str', flags=('--root',), metavar='DATASET',
               empty=NO_ROOTS,
               help='dataset to consider'),
        Option('all_pools', 'bool', default=False, help='consider every imported pool (instead of roots)'),
        Option('recursive', 'bool', default=True, help='only the roots, not their descendants'),
        Option('exclude', 'list', elements='str', default=[], metavar='PATTERN',
               help='fnmatch pattern of dataset names to skip'),
        Option('label', 'str', choices=naming.LABELS, metavar='LABEL', help='single label (with keep), instead of policy'),
        Option('keep', 'int', metavar='KEEP', help='how many snapshots of label to keep'),
        Option('policy', 'dict', metavar='LABEL=KEEP', empty=EMPTY_POLICY, help='label and how many to keep'),
        Option('prefix', 'str', default=naming.DEFAULT_PREFIX, help='first part of the snapshot names'),
        Option('separator', 'str', default=naming.DEFAULT_SEPARATOR, flags=('--sep',),
               help='one character between prefix and label'),
        Option('frequent_minutes', 'int', default=naming.DEFAULT_FREQUENT_MINUTES,
               help='length of the frequent slot in minutes'),
        Option('default_exclude', 'bool', default=False, help='only datasets with com.sun:auto-snapshot[:label]=true'),
        Option('skip_unchanged', 'bool', default=False, help='no new snapshot where nothing was written since the last'),
        Option('prune', 'bool', default=True, help='take snapshots without pruning'),
        Option('snapshot', 'bool', default=True, flags=('--destroy-only',), help='prune without taking snapshots'),
        Option('lock_dir', 'path', default=DEFAULT_LOCK_DIR, validator=reject_shell_metachars,
               help='directory of the per-pool lock files'),
        Option('lock_timeout', 'float', default=DEFAULT_LOCK_TIMEOUT, validator=validate_lock_timeout,
               help='seconds to wait for another run on the same pools'),
        Option('zfs_path', 'str', default='zfs', validator=reject_shell_metachars, help='the zfs command'),
    ),
    checks=(_config,),
    mutually_exclusive=(('label', 'policy'), ('keep', 'policy')),
    required_together=(('label', 'keep'),),
)


def normalise(raw: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Every autosnap option from *raw*, checked by the engine's rules; raises ValidationError."""
    return validate(SCHEMA, raw)


def to_config(values: t.Mapping[str, t.Any]) -> AutosnapConfig:
    """The config of normalised *values*."""
    return make_config(**{name: values[name] for name in CONFIG_OPTIONS})


def argv(raw: t.Mapping[str, t.Any]) -> list[str]:
    """``autosnap`` and its command line options for *raw*, checked."""
    return [SCHEMA.name] + to_argv(SCHEMA, normalise(raw))
