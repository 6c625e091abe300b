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

# What a native column can hold; none of them can hold a tab or a newline.
# Dataset names: letters, digits, '_', '-', '.', ':', ' ' and '/'.
_NATIVE_VALUE = {
    'name': re.compile(r'[A-Za-z0-9][A-Za-z0-9_.: /-]*'),
    'type': re.compile(r'filesystem|volume'),
    # raw with -p, '1.5K' from a legacy CLI without it
    'written': re.compile(r'[0-9][0-9.]*[BKMGTPEZ]?|-'),
}


def _free_form(column: str) -> bool:
    # user properties (their names hold a ':') take any value a user set, tabs and newlines included
    return ':' in column


def _starts_record(line: str, cols: t.Sequence[str]) -> bool:
    """Whether *line* begins a new row: the native columns before the first user property all read as such.

    Native values hold no tab or newline, so a real row always has them complete on its first line.
    """
    fields = line.split('\t')
    lead = next((i for i, c in enumerate(cols) if _free_form(c)), len(cols))
    # a row with a user property column has at least its first (possibly empty) line of it
    if len(fields) < min(lead + 1, len(cols)):
        return False
    for index in range(lead):
        pattern = _NATIVE_VALUE.get(cols[index])
        if pattern is not None and not pattern.fullmatch(fields[index]):
            return False
    return True


def _split_row(text: str, cols: t.Sequence[str]) -> list[str] | None:
    """The values of one row, or None when a tab inside a value makes the split ambiguous."""
    fields = text.split('\t')
    if len(fields) == len(cols):
        return fields
    free = [i for i, c in enumerate(cols) if _free_form(c)]
    if len(fields) > len(cols) and len(free) == 1:
        # only one column can hold tabs: every surplus tab is its own
        i = free[0]
        tail = len(cols) - i - 1
        return [*fields[:i], '\t'.join(fields[i:len(fields) - tail]), *fields[len(fields) - tail:]]
    return None


class DatasetListing(t.NamedTuple):
    datasets: list[Dataset]
    # datasets whose user property values could not be told apart, with why; left out of *datasets*
    unparsable: list[tuple[str, str]]


def dataset_listing(output: str, columns: t.Sequence[str]) -> DatasetListing:
    """``zfs list -H -p -o name,type,...`` where user property values may hold tabs and newlines.

    A newline inside a value continues the row on the next line: a line that does
    not begin with native values (a name, a type, ...) belongs to the row above.
    A tab inside a value adds a column; with one user property column that is
    unambiguous, with several it is not, and such a dataset is reported, not guessed.
    """
    cols = list(columns)
    if output.endswith('\n'):
        output = output[:-1]
    rows: list[list[str]] = []
    for line in output.split('\n') if output else []:
        if _starts_record(line, cols):
            rows.append([line])
        elif rows:
            rows[-1].append(line)
        else:
            raise ValueError(f'unexpected zfs output line (expected {len(cols)} columns): {line!r}')
    parsed: list[tuple[str, list[str] | None, str]] = []
    for row in rows:
        text = '\n'.join(row)
        found = text.count('\t') + 1
        why = ('a user property value holds a tab or newline that makes the listing ambiguous' if found > len(cols)
               else f'{found} of {len(cols)} columns')
        parsed.append((row[0].split('\t', 1)[0], _split_row(text, cols), why))
    seen: dict[str, int] = {}
    for name, _fields, _why in parsed:
        seen[name] = seen.get(name, 0) + 1
    result: list[Dataset] = []
    unparsable: list[tuple[str, str]] = []
    for name, fields, why in parsed:
        if seen[name] > 1:
            # a value that spans lines can imitate a row; a name twice means one of them is not real
            if (name, 'listed more than once') not in unparsable:
                unparsable.append((name, 'listed more than once'))
            continue
        if fields is None:
            unparsable.append((name, why))
            continue
        result.append(_dataset(dict(zip(cols, fields)), cols))
    return DatasetListing(result, unparsable)


def _dataset(row: t.Mapping[str, str], cols: t.Sequence[str]) -> Dataset:
    # user properties, plus any native property a caller asked for (e.g. encryption)
    props = {c: row[c] for c in cols if c not in _DATASET_CORE_COLUMNS}
    token = row.get('receive_resume_token')
    return Dataset(
        name=row['name'],
        type=row.get('type', 'filesystem'),
        properties=props,
        written=to_int(row['written']) if 'written' in row else None,
        receive_resume_token=token if token not in (None, '-', '') else None,
    )


def datasets(output: str, columns: t.Sequence[str]) -> list[Dataset]:
    """Every dataset of a listing; a row that does not parse is an error (see :func:`dataset_listing`)."""
    listing = dataset_listing(output, columns)
    if listing.unparsable:
        raise ValueError('unexpected zfs output for ' + '; '.join(f'{n}: {why}' for n, why in listing.unparsable))
    return listing.datasets


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
