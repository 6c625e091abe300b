# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Checks on user-supplied names, run before any command changes anything.

ZFS itself accepts a few characters (space, '%') that are a hazard once a name
travels through ssh or a log line someone pastes into a shell, so these checks
are deliberately stricter than ``zfs_namecheck``: alphanumerics and ``_ - . :``.
"""

from __future__ import annotations

import re
import typing as t

from ._types import ValidationError

# ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL
MAX_NAME_LEN = 255

# characters a POSIX shell (or ssh's remote shell) would interpret
SHELL_METACHARACTERS = frozenset(' \t\n\r\v\f;&|<>$`\\"\'*?[](){}!#~')

_COMPONENT_RE = re.compile(r'^[A-Za-z0-9_.:-]+$')
_POOL_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_.:-]*$')
# vdev keywords `zpool create` would read as a layout instead of a pool name
_RESERVED_POOL_PREFIXES = ('mirror', 'raidz', 'draid', 'spare')
_RESERVED_POOL_NAMES = ('log',)
_LOCK_KEY_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.:+-]*$')


def reject_shell_metachars(value: str, what: str = 'value') -> str:
    """Refuse control characters and anything a POSIX shell would interpret."""
    if not isinstance(value, str):
        raise ValidationError(f'{what} must be a string, got {type(value).__name__}')
    bad = sorted({c for c in value if c in SHELL_METACHARACTERS or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ValidationError(f'{what} {value!r} contains forbidden characters: {" ".join(repr(c) for c in bad)}')
    return value


def validate_lock_timeout(value: float, what: str = 'lock timeout') -> float:
    """Seconds to wait for a lock: 0 (do not wait) or more."""
    if value < 0:
        raise ValidationError(f'{what} must be >= 0, got {value:g}')
    return value


def _check_component(component: str, what: str, full: str) -> None:
    if not component:
        raise ValidationError(f'{what} {full!r} has an empty component')
    if component in ('.', '..'):
        raise ValidationError(f'{what} {full!r} has a component {component!r}, which ZFS does not allow')
    if not _COMPONENT_RE.match(component):
        raise ValidationError(
            f'{what} {full!r}: component {component!r} may only hold letters, digits and "_", "-", ".", ":"')


def _check_length(name: str, what: str) -> None:
    if len(name) > MAX_NAME_LEN:
        raise ValidationError(f'{what} {name!r} is longer than {MAX_NAME_LEN} characters')


def validate_pool_name(name: str, what: str = 'pool name') -> str:
    reject_shell_metachars(name, what)
    if not name:
        raise ValidationError(f'{what} must not be empty')
    _check_length(name, what)
    if not _POOL_RE.match(name):
        raise ValidationError(f'{what} {name!r} must start with a letter and hold only letters, digits and "_", "-", ".", ":"')
    lowered = name.lower()
    if lowered in _RESERVED_POOL_NAMES or lowered.startswith(_RESERVED_POOL_PREFIXES):
        raise ValidationError(f'{what} {name!r} is reserved by ZFS')
    return name


def validate_dataset_name(name: str, what: str = 'dataset name') -> str:
    """A filesystem or volume name such as ``tank/home/alice`` (no snapshot part)."""
    reject_shell_metachars(name, what)
    if not name:
        raise ValidationError(f'{what} must not be empty')
    if '@' in name:
        raise ValidationError(f'{what} {name!r} names a snapshot; give the dataset only')
    _check_length(name, what)
    pool, *rest = name.split('/')
    validate_pool_name(pool, f'{what} {name!r}: pool')
    for component in rest:
        _check_component(component, what, name)
    return name


def validate_snapshot_component(name: str, what: str = 'snapshot name') -> str:
    """The part after '@' (or '#' for bookmarks), or a piece that will become part of it."""
    reject_shell_metachars(name, what)
    for ch in '@/#':
        if ch in name:
            raise ValidationError(f'{what} {name!r} must not contain {ch!r}')
    _check_component(name, what, name)
    return name


def validate_lock_key(key: str) -> str:
    """Lock keys become file names: no path separators, no leading dot."""
    if not isinstance(key, str) or not _LOCK_KEY_RE.match(key) or len(key) > 200:
        raise ValidationError(f'lock key {key!r} must be a plain file name (letters, digits, "_", "-", ".", ":", "+")')
    return key


def validate_int(value: t.Any, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """Integers only: bools and floats are refused even where Python would coerce them."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r'[+-]?\d+', value.strip()):
            value = int(value)
        else:
            raise ValidationError(f'{what} must be an integer, got {value!r}')
    if minimum is not None and value < minimum:
        raise ValidationError(f'{what} must be >= {minimum}, got {value}')
    if maximum is not None and value > maximum:
        raise ValidationError(f'{what} must be <= {maximum}, got {value}')
    return int(value)


def unique(items: t.Iterable[str]) -> list[str]:
    """Drop repeats, keep first-seen order (argv order is what the user wrote)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
