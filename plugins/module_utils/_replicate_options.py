# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options of ``replicate``, once, for the module, the command line and the roles."""

from __future__ import annotations

import argparse
import dataclasses
import re
import socket
import typing as t

from . import _naming as naming
from ._lock import DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT
from ._options import Option, Schema, add_arguments, to_argv, validate
from ._replicate_plan import LAYOUTS
from ._transport import TRANSPORTS, SshOptions, validate_host, validate_ssh_options
from ._types import ValidationError
from ._validate import reject_shell_metachars, validate_dataset_name, validate_int, validate_lock_timeout

COMPRESSIONS = ('none', 'zstd', 'lz4')
_SIZE_RE = re.compile(r'^[1-9][0-9]*[kKmMgG%]?$')
_RATE_RE = re.compile(r'^[1-9][0-9]*[kKmMgG]?$')
_PROP_RE = re.compile(r'^[a-z][a-z0-9_.:-]*$')
_TARGET_ID_RE = re.compile(r'^[A-Za-z0-9_.:@/+\[\]-]+$')


# ------------------------------------------------------------------ per-option rules
def _datasets(names: list[str], what: str) -> list[str]:
    return [validate_dataset_name(name, 'dataset') for name in names]


def _dataset(name: str, what: str) -> str:
    return validate_dataset_name(name, what)


def _patterns(patterns: list[str], what: str) -> list[str]:
    for pattern in patterns:
        if not pattern or any(ord(c) < 32 for c in pattern):
            raise ValidationError(f'{what}: {pattern!r} is not a dataset name pattern')
    return patterns


def _host(host: str, what: str) -> str:
    try:
        return validate_host(host)
    except ValidationError as exc:
        raise ValidationError(f'{what}: {exc}') from None


def _prefix(value: str, what: str) -> str:
    return naming.validate_prefix(value)


def _separator(value: str, what: str) -> str:
    return naming.validate_separator(value)


def _retention(policy: dict[str, t.Any], what: str) -> dict[str, int]:
    out = {}
    for label, keep in policy.items():
        naming.validate_label(label)
        out[label] = validate_int(keep, f'{what}.{label}', 1)
    return out


def _size(value: str, what: str) -> str:
    if not _SIZE_RE.fullmatch(value):
        raise ValidationError(f'{what} must look like 128M, 1G or 5%, got {value!r}')
    return value


def _rate(value: str, what: str) -> str:
    if not _RATE_RE.fullmatch(value):
        raise ValidationError(f'{what} must look like 50M (bytes per second), got {value!r}')
    return value


def _at_least(minimum: int, maximum: int | None = None) -> t.Callable[[int, str], int]:
    def check(value: int, what: str) -> int:
        return validate_int(value, what, minimum, maximum)
    return check


def _properties(props: dict[str, t.Any], what: str) -> dict[str, str]:
    for key, value in props.items():
        if not _PROP_RE.fullmatch(key):
            raise ValidationError(f'{what}: {key!r} is not a property name')
        if not isinstance(value, str) or any(ord(c) < 32 for c in value):
            raise ValidationError(f'{what}.{key} must be a single-line string')
    return props


def _property_names(keys: list[str], what: str) -> list[str]:
    for key in keys:
        if not _PROP_RE.fullmatch(key):
            raise ValidationError(f'{what}: {key!r} is not a property name')
    return keys


def _target_id(value: str, what: str) -> str:
    if not _TARGET_ID_RE.fullmatch(value):
        raise ValidationError(f'{what} {value!r} may only hold letters, digits and "_.:@/+-[]"')
    return value


# ------------------------------------------------------------------ rules joining options
def _one_direction(values: dict[str, t.Any]) -> dict[str, t.Any]:
    if values['source_host'] and values['target_host']:
        raise ValidationError('give source_host (pull) or target_host (push), not both')
    return values


def _rate_needs_mbuffer(values: dict[str, t.Any]) -> dict[str, t.Any]:
    if values['rate_limit'] is not None and not (values['mbuffer'] or values['source_mbuffer']):
        raise ValidationError('rate_limit is applied by mbuffer; enable mbuffer or source_mbuffer')
    return values


def _ssh(values: dict[str, t.Any]) -> dict[str, t.Any]:
    validate_ssh_options(SshOptions(user=values['ssh_user'], port=values['ssh_port'],
                                    identity_file=values['ssh_identity_file'],
                                    known_hosts_file=values['ssh_known_hosts_file'],
                                    config_file=values['ssh_config_file']))
    return values


SCHEMA = Schema(
    name='replicate',
    help='Replicate ZFS snapshots to a backup target.',
    options=(
        Option('datasets', 'list', elements='str', required=True, positional=True, metavar='DATASET',
               validator=_datasets, empty='give the source datasets', help='source datasets'),
        Option('target_root', 'str', required=True, validator=_dataset, help='dataset the copies go below'),
        Option('target_layout', 'str', default='full', choices=LAYOUTS, help='how source names map below target_root'),
        Option('source_host', 'str', validator=_host, help='pull from this host'),
        Option('target_host', 'str', validator=_host, help='push to this host'),
        Option('recursive', 'bool', default=False, flags=('--recursive', '-r'), help='also the descendants'),
        Option('exclude', 'list', elements='str', default=[], metavar='PATTERN', validator=_patterns,
               help='fnmatch pattern of dataset names to skip'),
        Option('labels', 'list', elements='str', choices=naming.LABELS, flags=('--label',), metavar='LABEL',
               empty='an empty label filter would replicate nothing; leave it out to replicate every label',
               help='replicate only snapshots of this label'),
        Option('prefix', 'str', default=naming.DEFAULT_PREFIX, validator=_prefix, help='prefix of managed snapshots'),
        Option('separator', 'str', default=naming.DEFAULT_SEPARATOR, flags=('--sep',), validator=_separator,
               help='separator of managed snapshots'),
        Option('include_foreign', 'bool', default=False, help='also snapshots with other names'),
        Option('force_rollback', 'bool', default=False, help='zfs receive -F on a diverged target'),
        Option('transport', 'str', default='auto', choices=TRANSPORTS, help='how to reach the other host'),
        Option('ssh_user', 'str', help='user on the other host'),
        Option('ssh_port', 'int', validator=_at_least(1, 65535), help='SSH port'),
        Option('ssh_identity_file', 'path', help='SSH private key'),
        Option('ssh_known_hosts_file', 'path', help='known hosts file'),
        Option('ssh_config_file', 'path', help='ssh_config file'),
        Option('compression', 'str', default='none', choices=COMPRESSIONS, help='compression over the network'),
        Option('mbuffer', 'bool', default=True, help='no mbuffer on the receiving side'),
        Option('mbuffer_size', 'str', default='128M', validator=_size, help='mbuffer memory'),
        Option('source_mbuffer', 'bool', default=False, help='mbuffer on the sending side too'),
        Option('rate_limit', 'str', validator=_rate, help='bytes per second, for example 50M'),
        Option('stall_timeout', 'int', default=300, validator=_at_least(0), help='seconds without progress before failing'),
        Option('timeout', 'int', default=0, validator=_at_least(0), help='seconds a run may take (0: no limit)'),
        Option('receive_properties', 'dict', default={}, flags=('--receive-property',), metavar='PROPERTY=VALUE',
               validator=_properties, help='zfs receive -o'),
        Option('receive_exclude_properties', 'list', elements='str', default=[], flags=('--receive-exclude-property',),
               metavar='PROPERTY', validator=_property_names, help='zfs receive -x'),
        Option('target_id', 'str', validator=_target_id, help='identifies the target in hold tags'),
        Option('source_bookmark', 'bool', default=False, help='bookmark each new common snapshot on the source'),
        Option('target_retention', 'dict', default={}, metavar='LABEL=KEEP', validator=_retention,
               help='prune the target to this many snapshots of a label'),
        Option('lock_dir', 'path', default=DEFAULT_LOCK_DIR, validator=reject_shell_metachars, help='directory of the lock files'),
        Option('lock_timeout', 'float', default=DEFAULT_LOCK_TIMEOUT, validator=validate_lock_timeout,
               help='seconds to wait for another run on the same datasets'),
    ),
    checks=(_one_direction, _rate_needs_mbuffer, _ssh),
    mutually_exclusive=(('source_host', 'target_host'),),
)


def normalise(raw: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Every replicate option from *raw*, checked by the engine's rules; raises ValidationError."""
    return validate(SCHEMA, raw)


def argv(raw: t.Mapping[str, t.Any]) -> list[str]:
    """``replicate`` and its command line arguments for *raw*, checked."""
    return [SCHEMA.name] + to_argv(SCHEMA, normalise(raw))


@dataclasses.dataclass
class ReplicateParams:
    """The normalised options of one run; see SCHEMA for what each one means.

    Inside, an empty ``labels`` means no label filter: a user says that by
    leaving ``labels`` out, since an empty filter given as input is refused.
    """

    datasets: list[str]
    target_root: str
    target_layout: str = 'full'
    source_host: str | None = None
    target_host: str | None = None
    recursive: bool = False
    exclude: list[str] = dataclasses.field(default_factory=list)
    labels: list[str] = dataclasses.field(default_factory=list)
    prefix: str = naming.DEFAULT_PREFIX
    separator: str = naming.DEFAULT_SEPARATOR
    include_foreign: bool = False
    force_rollback: bool = False
    transport: str = 'auto'
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_identity_file: str | None = None
    ssh_known_hosts_file: str | None = None
    ssh_config_file: str | None = None
    compression: str = 'none'
    mbuffer: bool = True
    mbuffer_size: str = '128M'
    source_mbuffer: bool = False
    rate_limit: str | None = None
    stall_timeout: int = 300
    timeout: int = 0
    receive_properties: dict[str, str] = dataclasses.field(default_factory=dict)
    receive_exclude_properties: list[str] = dataclasses.field(default_factory=list)
    target_id: str | None = None
    source_bookmark: bool = False
    target_retention: dict[str, int] = dataclasses.field(default_factory=dict)
    lock_dir: str = DEFAULT_LOCK_DIR
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT

    @classmethod
    def from_mapping(cls, data: t.Mapping[str, t.Any]) -> ReplicateParams:
        values = normalise(data)
        values['labels'] = values['labels'] or []
        return cls(**values)

    @property
    def mode(self) -> str:
        if self.target_host:
            return 'push'
        return 'pull' if self.source_host else 'local'

    def ssh_options(self) -> SshOptions:
        return SshOptions(user=self.ssh_user, port=self.ssh_port, identity_file=self.ssh_identity_file,
                          known_hosts_file=self.ssh_known_hosts_file, config_file=self.ssh_config_file)

    def validated(self) -> ReplicateParams:
        raw = dataclasses.asdict(self)
        raw['labels'] = raw['labels'] or None
        values = normalise(raw)
        values['labels'] = values['labels'] or []
        for name, value in values.items():
            setattr(self, name, value)
        return self

    def default_target_id(self) -> str:
        host = self.target_host or socket.gethostname()
        return f'{host}:{self.target_root}'


# ------------------------------------------------------------------ plain entry point
def build_parser(prog: str = 'replicate', parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The command line of ``replicate``, from SCHEMA; *parser* (a subcommand's) is filled in when given."""
    ap = parser or argparse.ArgumentParser(prog=prog, description=SCHEMA.help)
    add_arguments(ap, SCHEMA)
    ap.add_argument('--check', action='store_true', help='report the plan, change nothing')
    return ap
