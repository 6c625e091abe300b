# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stateful stand-in for one host's zfs CLI (OpenZFS 2.x output), recording every argv.

It answers the commands the autosnap engine runs with ``zfs list -Hp`` style
output (tab-separated, numbers raw), applies snapshots and destroys the way
OpenZFS does (both all-or-nothing, holds and clones refuse a destroy), so a
second run sees the first run's effect.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import CommandResult


@dataclasses.dataclass
class FakeSnap:
    guid: int
    createtxg: int
    creation: int
    userrefs: int = 0
    clones: tuple[str, ...] = ()


@dataclasses.dataclass
class FakeDataset:
    type: str = 'filesystem'
    props: dict[str, str] = dataclasses.field(default_factory=dict)  # local values only; children inherit
    written: int = 4096


class FakeZfsHost:
    def __init__(self, datasets: t.Iterable[str] = (), clock: int = 1_700_000_000, version: str = '2.2.2') -> None:
        self.datasets: dict[str, FakeDataset] = {name: FakeDataset() for name in datasets}
        self.snaps: dict[str, FakeSnap] = {}
        self.txg = 1000
        self.clock = clock
        self.version = version
        self.calls: list[list[str]] = []
        self.before: dict[str, t.Callable[[list[str]], None]] = {}  # verb -> hook run before the command
        self.anonymous_destroy_errors = False  # stderr that names no snapshot, to force bisection
        self.fail_snapshot_pools: set[str] = set()

    # ----------------------------------------------------------------- setup
    def add_snapshot(self, full: str, *, creation: int | None = None, userrefs: int = 0,
                     clones: tuple[str, ...] = ()) -> FakeSnap:
        self.txg += 1
        snap = FakeSnap(guid=10_000 + self.txg, createtxg=self.txg, creation=self.clock if creation is None else creation,
                        userrefs=userrefs, clones=clones)
        self.snaps[full] = snap
        return snap

    def snapshot_names(self, dataset: str | None = None) -> list[str]:
        return sorted(n for n in self.snaps if dataset is None or n.split('@', 1)[0] == dataset)

    def changing_calls(self) -> list[list[str]]:
        return [c for c in self.calls if len(c) > 1 and c[1] in ('snapshot', 'destroy')]

    def count(self, *prefix: str) -> int:
        return sum(1 for c in self.calls if c[:len(prefix)] == list(prefix))

    # ---------------------------------------------------------------- runner
    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        verb = argv[1] if len(argv) > 1 else ''
        if verb in self.before:
            self.before[verb](argv)
        handler = {
            ('zfs', 'version'): self._version,
            ('zpool', 'list'): self._pools,
            ('zfs', 'list'): self._list,
            ('zfs', 'snapshot'): self._snapshot,
            ('zfs', 'destroy'): self._destroy,
        }.get((argv[0].rsplit('/', 1)[-1], verb))
        if handler is None:
            res = CommandResult(argv, 2, '', f'fake zfs: unsupported command {argv}')
        else:
            rc, out, err = handler(argv[2:])
            res = CommandResult(argv, rc, out, err)
        if check and res.rc != 0:
            raise ZfsCommandError(argv, res.rc, res.stdout, res.stderr)
        return res

    def _version(self, args: list[str]) -> tuple[int, str, str]:
        return 0, f'zfs-{self.version}-1\nzfs-kmod-{self.version}-1\n', ''

    def _pools(self, args: list[str]) -> tuple[int, str, str]:
        return 0, ''.join(f'{p}\n' for p in sorted({d.split('/', 1)[0] for d in self.datasets})), ''

    def _effective(self, name: str, prop: str) -> str:
        parts = name.split('/')
        for i in range(len(parts), 0, -1):
            value = self.datasets['/'.join(parts[:i])].props.get(prop)
            if value is not None:
                return value
        return '-'

    def _under(self, roots: list[str], recursive: bool, depth0: bool) -> list[str]:
        names = []
        for name in sorted(self.datasets):
            for root in roots or [n for n in self.datasets if '/' not in n]:
                if name == root or (recursive and not depth0 and name.startswith(root + '/')):
                    names.append(name)
                    break
        return names

    def _list(self, args: list[str]) -> tuple[int, str, str]:
        opts: dict[str, str] = {}
        flags: set[str] = set()
        rest: list[str] = []
        it = iter(args)
        for arg in it:
            if arg in ('-o', '-t', '-d', '-s'):
                opts[arg] = next(it)
            elif arg.startswith('-'):
                flags.add(arg)
            else:
                rest.append(arg)
        cols = opts['-o'].split(',')
        recursive = '-r' in flags or '-d' in opts
        missing_err = ''.join(f"cannot open '{m}': dataset does not exist\n" for m in rest if m not in self.datasets)
        if opts.get('-t') == 'snapshot':
            # -d 1 on a snapshot listing means the dataset's own snapshots
            names = self._under(rest, '-r' in flags or not rest, False)
            lines = []
            for ds in names:
                for full, snap in sorted(((f, s) for f, s in self.snaps.items() if f.split('@', 1)[0] == ds),
                                         key=lambda fs: fs[1].createtxg):
                    values = {'name': full, 'guid': snap.guid, 'createtxg': snap.createtxg, 'creation': snap.creation,
                              'userrefs': snap.userrefs, 'clones': ','.join(snap.clones) or '-'}
                    lines.append('\t'.join(str(values[c]) for c in cols))
            return (1 if missing_err else 0), ''.join(f'{line}\n' for line in lines), missing_err
        names = self._under(rest, recursive, opts.get('-d') == '0')
        lines = []
        for name in names:
            ds = self.datasets[name]
            values = {'name': name, 'type': ds.type, 'written': str(ds.written)}
            lines.append('\t'.join(values[c] if c in values else self._effective(name, c) for c in cols))
        return (1 if missing_err else 0), ''.join(f'{line}\n' for line in lines), missing_err

    def _snapshot(self, args: list[str]) -> tuple[int, str, str]:
        names = [a for a in args if not a.startswith('-')]
        errs = []
        for full in names:
            ds = full.split('@', 1)[0]
            if ds.split('/', 1)[0] in self.fail_snapshot_pools:
                errs.append(f"cannot create snapshot '{full}': pool I/O is currently suspended")
            elif ds not in self.datasets:
                errs.append(f"cannot create snapshot '{full}': dataset does not exist")
            elif full in self.snaps:
                errs.append(f"cannot create snapshot '{full}': dataset already exists")
        if errs:
            return 1, '', '\n'.join(errs) + '\nno snapshots were created\n'
        self.txg += 1  # one transaction group for the whole call, as OpenZFS does
        for full in names:
            self.snaps[full] = FakeSnap(guid=20_000 + len(self.snaps) + self.txg, createtxg=self.txg, creation=self.clock)
            self.datasets[full.split('@', 1)[0]].written = 0
        return 0, '', ''

    def _destroy(self, args: list[str]) -> tuple[int, str, str]:
        if any(a.startswith('-') for a in args) or len(args) != 1:
            return 2, '', f'fake zfs: this engine must not pass flags to destroy: {args}'
        ds, names = args[0].split('@', 1)
        fulls = [f'{ds}@{n}' for n in names.split(',')]
        present = [f for f in fulls if f in self.snaps]
        if not present:
            return 1, '', 'could not find any snapshots to destroy; check snapshot names.\n'
        errs = []
        for full in present:
            snap = self.snaps[full]
            if snap.userrefs:
                errs.append(f'cannot destroy snapshot {full}: dataset is busy')
            elif snap.clones:
                errs.append(f'cannot destroy snapshot {full}: snapshot has dependent clones')
        if errs:
            if self.anonymous_destroy_errors:
                return 1, '', 'internal error: something went wrong\n'
            return 1, '', '\n'.join(errs) + '\n'
        for full in present:
            del self.snaps[full]
        return 0, '', ''
