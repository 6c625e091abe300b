# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which datasets get which labels, decided from the effective values of two user properties.

Per dataset and label, the generic ``com.sun:auto-snapshot`` and the label's own
``com.sun:auto-snapshot:<label>`` are read as zfs-auto-snapshot reads them: a
value containing ``false`` (any case) is false, else one containing ``true`` is
true, anything else counts as unset. Then:

* neither is true or false: the mode decides (included; excluded with ``default_exclude``);
* only one is, or both agree: that value decides;
* they disagree: the one set nearer to the dataset decides (set on the dataset
  itself, else on the closest ancestor), and when both are set on the same
  dataset the label's own property decides.

Only the last rule differs from the script, which resolves a disagreement by the
mode (false wins by default, true wins with ``--default-exclude``), whoever set
what where. ``docs/selection.md`` has the full table and the reasons.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing as t

from ._types import Dataset

GENERIC_PROPERTY = 'com.sun:auto-snapshot'

# where a value comes from, as the SOURCE column of `zfs get` prints it
_SET_HERE = ('local', 'received')
_INHERITED = 'inherited from '


def label_property(label: str) -> str:
    return f'{GENERIC_PROPERTY}:{label}'


def property_columns(labels: t.Iterable[str]) -> list[str]:
    return [GENERIC_PROPERTY, *(label_property(label) for label in labels)]


def read_value(raw: str | None) -> bool | None:
    """True, False or None (counts as unset), by substring as the script's awk does."""
    if raw is None or raw.strip() in ('', '-'):
        return None
    value = raw.lower()
    if 'false' in value:
        return False
    if 'true' in value:
        return True
    return None


@dataclasses.dataclass(frozen=True)
class Setting:
    """One of the two properties as it applies to one dataset."""

    prop: str
    raw: str | None
    source: str | None  # `zfs get` SOURCE; None when not listed

    @property
    def value(self) -> bool | None:
        return read_value(self.raw)

    def origin(self, dataset: str) -> str | None:
        """The dataset the value is set on, or None when the source is not known."""
        if self.source in _SET_HERE:
            return dataset
        if self.source and self.source.startswith(_INHERITED):
            return self.source[len(_INHERITED):]
        return None

    def describe(self) -> str:
        text = f'{self.prop}={self.raw}'
        return f'{text} ({self.source})' if self.source else text


def _settings(props: t.Mapping[str, str], label: str,
              sources: t.Mapping[str, str] | None) -> tuple[Setting, Setting]:
    src = sources or {}
    prop = label_property(label)
    return (Setting(GENERIC_PROPERTY, props.get(GENERIC_PROPERTY), src.get(GENERIC_PROPERTY)),
            Setting(prop, props.get(prop), src.get(prop)))


def _depth(name: str) -> int:
    return name.count('/')


def wants_label(props: t.Mapping[str, str], label: str, default_exclude: bool = False, *,
                dataset: str = '', sources: t.Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Whether a dataset with these effective properties takes *label*, and why not.

    *sources* maps a property to its `zfs get` SOURCE; it is only consulted
    when the two properties disagree.
    """
    generic, specific = _settings(props, label, sources)
    g, s = generic.value, specific.value
    if g is None and s is None:
        if default_exclude:
            return False, f'default_exclude and neither {GENERIC_PROPERTY} nor {specific.prop} is true'
        return True, ''
    if s is None or g is None or g == s:
        decider = specific if s is not None else generic
        return (True, '') if decider.value else (False, decider.describe())
    g_origin, s_origin = generic.origin(dataset), specific.origin(dataset)
    if g_origin is None or s_origin is None:
        # guessing could snapshot what an admin excluded, or miss what they asked for
        return False, f'{generic.describe()} and {specific.describe()} disagree and where each is set could not be read'
    if _depth(s_origin) >= _depth(g_origin):
        winner, loser, how = specific, generic, 'overrides' if s_origin == g_origin else 'is nearer than'
    else:
        winner, loser, how = generic, specific, 'is nearer than'
    if winner.value:
        return True, ''
    return False, f'{winner.describe()} {how} {loser.describe()}'


def disagrees(props: t.Mapping[str, str], label: str) -> bool:
    """Whether the decision for *label* depends on where the two properties are set."""
    generic, specific = _settings(props, label, None)
    return None not in (generic.value, specific.value) and generic.value != specific.value


def needs_sources(datasets: t.Iterable[Dataset], labels: t.Iterable[str]) -> list[str]:
    """Names of datasets whose two properties disagree for some label and whose sources are not known yet.

    Disagreements are rare, so the sources are asked for these datasets only.
    """
    labels = list(labels)
    out = []
    for ds in datasets:
        props = property_columns(label for label in labels if disagrees(ds.properties, label))
        if len(props) > 1 and any(p not in ds.sources for p in props):
            out.append(ds.name)
    return out


def odd_values(ds: Dataset, labels: t.Iterable[str]) -> list[str]:
    """Warnings for values other than exactly true or false, with how they are read."""
    out = []
    for prop in property_columns(labels):
        raw = ds.properties.get(prop)
        if raw is None or raw.strip() == '-' or raw.strip().lower() in ('true', 'false'):
            continue
        value = read_value(raw)
        if value is None:
            reading = 'counts as unset'
        else:
            reading = f'is read as {str(value).lower()}, as zfs-auto-snapshot reads it'
        out.append(f'{ds.name}: {prop}={raw!r} is neither true nor false and {reading}')
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

    Each dataset is decided on its own properties (never through a recursive
    snapshot of an ancestor). Each dataset name appears once in the exclusions,
    with the first reason found.
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
            ok, reason = wants_label(ds.properties, label, default_exclude, dataset=ds.name, sources=ds.sources)
            if ok:
                selected[label].append(ds.name)
            else:
                reasons.append(f'{label}: {reason}')
        if len(reasons) == len(labels) and labels:
            excluded.append({'name': ds.name, 'reason': '; '.join(reasons)})
    return selected, excluded, warnings
