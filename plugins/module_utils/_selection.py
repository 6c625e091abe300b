# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which datasets get which labels, decided from one ``zfs list`` of effective property values.

The rules are those of zfs-auto-snapshot for Linux:

============================  =========================  ================  ==================
``com.sun:auto-snapshot``     ``...:auto-snapshot:<l>``  default           ``default_exclude``
============================  =========================  ================  ==================
unset                         unset                      included          excluded
true                          unset / true               included          included
unset / true                  true                       included          included
false                         any                        excluded          excluded
any                           false                      excluded          excluded
============================  =========================  ================  ==================

So a label-specific ``false`` overrides a generic ``true``, and any ``false``
wins (the script's ``NOAUTO`` list). Values compare case-insensitively; user
properties inherit, so children of an excluded dataset are excluded too.
"""

from __future__ import annotations

import fnmatch
import typing as t

from ._types import Dataset

GENERIC_PROPERTY = 'com.sun:auto-snapshot'


def label_property(label: str) -> str:
    return f'{GENERIC_PROPERTY}:{label}'


def property_columns(labels: t.Iterable[str]) -> list[str]:
    return [GENERIC_PROPERTY, *(label_property(label) for label in labels)]


def _norm(value: str | None) -> str:
    value = (value or '').strip().lower()
    return '' if value == '-' else value


def wants_label(props: t.Mapping[str, str], label: str, default_exclude: bool = False) -> tuple[bool, str]:
    """Whether a dataset with these effective properties takes *label*, and why not."""
    generic = _norm(props.get(GENERIC_PROPERTY))
    specific = _norm(props.get(label_property(label)))
    if specific == 'false':
        return False, f'{label_property(label)}=false'
    if generic == 'false':
        return False, f'{GENERIC_PROPERTY}=false'
    if default_exclude and 'true' not in (generic, specific):
        return False, f'default_exclude and neither {GENERIC_PROPERTY} nor {label_property(label)} is true'
    return True, ''


def odd_values(ds: Dataset, labels: t.Iterable[str]) -> list[str]:
    """Warnings for values other than true/false, which the script also silently ignores."""
    out = []
    for prop in property_columns(labels):
        value = _norm(ds.properties.get(prop))
        if value not in ('', 'true', 'false'):
            out.append(f'{ds.name}: {prop}={ds.properties.get(prop)!r} is neither true nor false and counts as unset')
    return out


def excluded_by_pattern(name: str, patterns: t.Iterable[str]) -> str | None:
    # case-sensitive: ZFS names are
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return pattern
    return None


def select(datasets: t.Sequence[Dataset], labels: t.Sequence[str], exclude: t.Sequence[str] = (),
           default_exclude: bool = False) -> tuple[dict[str, list[str]], list[dict[str, str]], list[str]]:
    """Per label, the dataset names that take it; plus exclusions with reasons and warnings.

    Each dataset name appears once in the exclusions, with the first reason found.
    """
    selected: dict[str, list[str]] = {label: [] for label in labels}
    excluded: list[dict[str, str]] = []
    warnings: list[str] = []
    for ds in datasets:
        pattern = excluded_by_pattern(ds.name, exclude)
        if pattern is not None:
            excluded.append({'name': ds.name, 'reason': f'matches exclude pattern {pattern!r}'})
            continue
        if ds.unreadable:
            # its com.sun:auto-snapshot values are unknown: taking snapshots nobody asked for is the worse guess
            excluded.append({'name': ds.name, 'reason': f'{ds.unreadable}; not snapshotted until it is fixed'})
            warnings.append(f'{ds.name}: {ds.unreadable}; not snapshotted until the value is fixed')
            continue
        warnings.extend(odd_values(ds, labels))
        reasons = []
        for label in labels:
            ok, reason = wants_label(ds.properties, label, default_exclude)
            if ok:
                selected[label].append(ds.name)
            else:
                reasons.append(f'{label}: {reason}')
        if len(reasons) == len(labels) and labels:
            excluded.append({'name': ds.name, 'reason': '; '.join(reasons)})
    return selected, excluded, warnings
