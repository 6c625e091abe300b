# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure parsers of ``zfs`` output; tested on recorded output of each OpenZFS version."""

from __future__ import annotations

import re
import typing as t

from ._types import Dataset, Features, Snapshot


def to_int(value: str) -> int | None:
    """``zfs -p`` numbers; '-' (not applicable) and anything non-numeric become None."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    return None


def _rows(output: str, ncols: int) -> t.Iterator[list[str]]:
    for line in output.splitlines():
        if not line:
            continue
        # -H separates columns by a single tab; values (user properties) may hold spaces
        fields = line.split('\t')
        if len(fields) != ncols:
            raise ValueError(f'unexpected zfs output line (expected {ncols} columns): {line!r}')
        yield fields


_DATASET_CORE_COLUMNS = ('name', 'type', 'written', 'receive_resume_token')


class AmbiguousOutput(ValueError):
    """zfs output whose rows cannot be told apart (values holding both tabs and newlines)."""


def _dataset_rows(output: str, cols: t.Sequence[str]) -> t.Iterator[tuple[list[str], bool]]:
    """Rows of a dataset listing, and whether the row's user property values are unreadable.

    `zfs list -H` prints user property values raw. A newline in a value continues its row on the next
    line: joining lines until the row has all its columns reads it exactly. A tab in a value gives a
    row more columns than asked: the core columns (name, type, ...), which come first and cannot hold
    either, are still exact, but which value holds the tab is not. Both in one row leave no way to tell
    where the next row begins, and guessing could invent or lose datasets: that is an error.
    """
    ncols = len(cols)
    lines = output.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        row, joined = lines[i], 0
        while len(row.split('\t')) < ncols and i + joined + 1 < len(lines):
            joined += 1
            row += '\n' + lines[i + joined]
        fields = row.split('\t')
        name = fields[0]
        if len(fields) < ncols or (len(fields) > ncols and joined):
            raise AmbiguousOutput(f'cannot read the zfs listing at dataset {name!r}: a user property value holds '
                                  'a tab and a newline (or the output is cut); fix the value with zfs set or zfs inherit')
        i += joined + 1
        if len(fields) > ncols:
            yield fields[:len(_core(cols))] + ['-'] * (ncols - len(_core(cols))), True
        else:
            yield fields, False


def _core(cols: t.Sequence[str]) -> list[str]:
    # the engine asks for the core columns first, then user properties
    out = []
    for col in cols:
        if col not in _DATASET_CORE_COLUMNS:
            break
        out.append(col)
    return out


def datasets(output: str, columns: t.Sequence[str]) -> list[Dataset]:
    result = []
    cols = list(columns)
    seen: set[str] = set()
    for fields, unreadable in _dataset_rows(output, cols):
        if fields[0] in seen:
            raise AmbiguousOutput(f'dataset {fields[0]!r} is listed twice: a user property value holds a forged row')
        seen.add(fields[0])
        row = dict(zip(cols, fields))
        # user properties, plus any native property a caller asked for (e.g. encryption)
        props = {c: row[c] for c in cols if c not in _DATASET_CORE_COLUMNS}
        token = row.get('receive_resume_token')
        result.append(Dataset(
            name=row['name'],
            type=row.get('type', 'filesystem'),
            properties=props,
            written=to_int(row['written']) if 'written' in row else None,
            receive_resume_token=token if token not in (None, '-', '') else None,
            unreadable='a user property value holds a tab' if unreadable else None,
        ))
    return result


def property_sources(output: str) -> dict[str, dict[str, str]]:
    """``zfs get -H -o name,property,source``: per dataset, where each property's value comes from."""
    out: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        fields = line.split('\t')
        # a source is 'local', 'default', '-' or 'inherited from NAME'; none holds a tab
        if len(fields) == 3:
            out.setdefault(fields[0], {})[fields[1]] = fields[2]
    return out


def snapshots(output: str, columns: t.Sequence[str]) -> list[Snapshot]:
    result = []
    cols = list(columns)
    for fields in _rows(output, len(cols)):
        row = dict(zip(cols, fields))
        full = row['name']
        is_bookmark = '#' in full
        dataset, _sep, name = full.partition('#' if is_bookmark else '@')
        clones = row.get('clones', '-')
        result.append(Snapshot(
            dataset=dataset,
            name=name,
            guid=to_int(row['guid']) or 0,
            createtxg=to_int(row['createtxg']) or 0,
            creation=to_int(row.get('creation', '-')) or 0,
            userrefs=to_int(row.get('userrefs', '-')) or 0,
            clones=tuple(c for c in clones.split(',') if c and c != '-'),
            is_bookmark=is_bookmark,
        ))
    return result


def received_snapshots(output: str, columns: t.Sequence[str]) -> list[tuple[Snapshot, str]]:
    """Snapshots with the value of the last column (a user property) beside each."""
    snaps = snapshots(output, columns)
    values = [fields[-1] for fields in _rows(output, len(columns))]
    return list(zip(snaps, values))


def snapshots_from_get(output: str) -> list[Snapshot]:
    """Legacy fallback: ``zfs get -Hp -o name,property,value guid,createtxg,... snap...``."""
    values: dict[str, dict[str, str]] = {}
    for fields in _rows(output, 3):
        values.setdefault(fields[0], {})[fields[1]] = fields[2]
    result = []
    for full, props in values.items():
        dataset, _sep, name = full.partition('@')
        result.append(Snapshot(
            dataset=dataset,
            name=name,
            guid=to_int(props.get('guid', '-')) or 0,
            createtxg=to_int(props.get('createtxg', '-')) or 0,
            creation=to_int(props.get('creation', '-')) or 0,
            userrefs=to_int(props.get('userrefs', '-')) or 0,
        ))
    return result


def holds(output: str) -> list[tuple[str, str]]:
    """``zfs holds -H``: name, tag, timestamp."""
    out = []
    for line in output.splitlines():
        fields = line.split('\t')
        if len(fields) >= 2:
            out.append((fields[0], fields[1]))
    return out


_VERSION_RE = re.compile(r'^zfs-(?:kmod-)?(\d+)\.(\d+)\.(\d+)', re.MULTILINE)


def features_from_version(output: str) -> Features:
    """``zfs version`` exists on OpenZFS >= 0.8, which has every feature the engine uses."""
    match = _VERSION_RE.search(output)
    version = '.'.join(match.groups()) if match else None
    return Features(version=version)


ErrorKind = t.Literal['held', 'cloned', 'missing', 'exists']

# The wording of each refusal in the OpenZFS series recorded under tests/.../fixtures.
_ERROR_HINTS: tuple[tuple[ErrorKind, tuple[str, ...]], ...] = (
    # 2.1 words a held snapshot's EBUSY as 'dataset is busy', 2.3 on as "it's being held"
    ('held', ("it's being held", 'dataset is busy')),
    ('cloned', ('has dependent clones',)),
    ('missing', ('does not exist', 'could not find any snapshots')),
    ('exists', ('already exists',)),
)

_MISSING_RE = re.compile(r"cannot open '([^']+)': dataset does not exist")


def error_kind(stderr: str) -> ErrorKind | None:
    """Why zfs refused, from its stderr: the first known reason found, None for anything else."""
    text = stderr.lower()
    for kind, hints in _ERROR_HINTS:
        if any(hint in text for hint in hints):
            return kind
    return None


def missing_datasets(stderr: str) -> list[str]:
    """Names ``zfs list`` reported as not existing."""
    return _MISSING_RE.findall(stderr)


def refused_snapshots(stderr: str, dataset: str, names: t.Sequence[str]) -> dict[str, str]:
    """Names of *dataset* a failed ``zfs destroy ds@a,b`` blamed, with the reason it gave."""
    out: dict[str, str] = {}
    for line in stderr.splitlines():
        for name in names:
            full = f'{dataset}@{name}'
            for marker in (f'{full}: ', f"'{full}': "):
                pos = line.find(marker)
                if pos >= 0 and name not in out:
                    out[name] = line[pos + len(marker):].strip() or line.strip()
    return out


def is_usage_error(stderr: str) -> bool:
    text = stderr.lower()
    return 'invalid option' in text or 'usage:' in text or 'unrecognized' in text


# `zfs send -t` reports a token it cannot use with one of these
_STALE_TOKEN_HINTS = ('no longer exists', 'used in the initial send', 'is corrupt', 'no longer the same snapshot',
                      'does not exist')


def parse_send_size(output: str) -> int | None:
    """Total of ``zfs send -nvP``: its ``size`` line."""
    size = None
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == 'size' and fields[1].isdigit():
            size = int(fields[1])
    return size


def is_stale_token_error(stderr: str) -> bool:
    """``zfs send -t`` refused the token because what it refers to is gone or changed."""
    text = stderr.lower()
    return any(hint in text for hint in _STALE_TOKEN_HINTS)


def rows(output: str, ncols: int) -> list[tuple[str, ...]]:
    """Rows of a ``zfs list -H`` of *ncols* built-in columns (no user properties: no tabs in values)."""
    return [tuple(fields) for fields in _rows(output, ncols)]


def token_toname(output: str) -> str | None:
    """The ``toname`` of a resume token, from what ``zfs send -nvP -t TOKEN`` printed; None if absent."""
    for line in output.splitlines():
        key, sep, value = line.strip().partition(' = ')
        if sep and key == 'toname' and value:
            return value
    return None
