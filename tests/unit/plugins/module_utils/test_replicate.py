# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The replication engine against two simulated hosts.

``FakeHost`` answers the zfs commands the engine runs with OpenZFS 2.x style
output (``-Hp``: tab-separated, raw numbers) and keeps state, and the stream
is simulated by applying ``zfs send``'s argv to the receiving host the way
``zfs receive`` would (guids kept, refusals where OpenZFS refuses), so
second runs, resumes and divergence play out as they would on real pools.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import pathlib
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _replicate, _replicate_exec
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import format_name
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import PipelineError, PipelineResult
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate import (
    ReplicateParams,
    ReplicationError,
    replicate,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._cli import cli_replicate
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_plan import (
    MissingPool,
    NotAReplica,
    TooManyRounds,
    bookmark_suffix,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import LocalSegment, Stage, Transport
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Interrupted, ValidationError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import CommandResult

GUIDS = itertools.count(7366539146932519375, 104729)
MUTATING = ('create', 'receive', 'hold', 'release', 'destroy', 'bookmark', 'snapshot', 'rollback')


def snapname(label: str, day: int, hour: int = 0) -> str:
    return format_name('zfs-auto-snap', '_', label, dt.datetime(2024, 5, day, hour, tzinfo=dt.timezone.utc))


@dataclasses.dataclass
class FSnap:
    guid: int
    txg: int
    holds: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class FDataset:
    type: str = 'filesystem'
    written: int = 0
    token: str | None = None
    encryption: str = 'off'
    snaps: dict[str, FSnap] = dataclasses.field(default_factory=dict)
    marks: dict[str, FSnap] = dataclasses.field(default_factory=dict)
    props: dict[str, str] = dataclasses.field(default_factory=dict)


class FakeHost:
    """One host's zfs CLI and pools; also serves as its Runner."""

    # every command of every host, in order
    journal: t.ClassVar[list[list[str]]] = []

    def __init__(self, *datasets: str) -> None:
        self.datasets: dict[str, FDataset] = {name: FDataset() for name in datasets}
        self.txg = 1000
        self.calls: list[list[str]] = []
        self.tools = {'mbuffer', 'zstd', 'lz4', 'sh'}
        self.version = 'zfs-2.2.2-1\nzfs-kmod-2.2.2-1\n'

    def snap(self, dataset: str, *names: str) -> None:
        for name in names:
            self.txg += 10
            self.datasets[dataset].snaps[name] = FSnap(next(GUIDS), self.txg)
            self.datasets[dataset].written = 0

    def mutations(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] == 'zfs' and c[1] in MUTATING]

    # ---------------------------------------------------------------- runner
    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        self.journal.append(argv)
        if argv[0] == 'sh':
            rc = 0 if argv[-1] in self.tools else 1
            return CommandResult(argv, rc, '', '')
        rc, out, err = getattr(self, '_' + argv[1])(argv[2:])
        result = CommandResult(argv, rc, out, err)
        if check and rc:
            from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ZfsCommandError

            raise ZfsCommandError(argv, rc, out, err)
        return result

    def _version(self, args: list[str]) -> tuple[int, str, str]:
        return 0, self.version, ''

    @staticmethod
    def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
        opts: dict[str, str] = {}
        rest = list(args)
        while rest and rest[0].startswith('-'):
            flag = rest.pop(0)
            opts[flag] = rest.pop(0) if flag in ('-t', '-o', '-d') else ''
        return opts, rest

    def _under(self, roots: list[str], opts: dict[str, str]) -> tuple[list[str], str]:
        for root in roots:
            if root not in self.datasets:
                return [], f"cannot open '{root}': dataset does not exist\n"
        if '-r' in opts:
            return [n for n in sorted(self.datasets) if any(n == r or n.startswith(r + '/') for r in roots)], ''
        return list(roots), ''

    def _list(self, args: list[str]) -> tuple[int, str, str]:
        opts, roots = self._options(args)
        if '-t' not in opts:
            return (0, roots[0] + '\n', '') if roots[0] in self.datasets else (1, '', f"cannot open '{roots[0]}': dataset does not exist\n")
        names, err = self._under(roots, opts)
        if err:
            return 1, '', err
        cols = opts['-o'].split(',')
        lines = []
        for name in names:
            ds = self.datasets[name]
            if opts['-t'].startswith('snapshot'):
                items = [(f'{name}@{n}', s, False) for n, s in ds.snaps.items()]
                if 'bookmark' in opts['-t']:
                    items += [(f'{name}#{n}', s, True) for n, s in ds.marks.items()]
                for full, s, mark in items:
                    row = {'name': full, 'guid': s.guid, 'createtxg': s.txg, 'creation': 1714521600 + s.txg,
                           'userrefs': '-' if mark else len(s.holds), 'clones': '-' if mark else ''}
                    lines.append('\t'.join(str(row[c]) for c in cols))
            else:
                row = {'name': name, 'type': ds.type, 'written': ds.written, 'receive_resume_token': ds.token or '-',
                       'encryption': ds.encryption}
                lines.append('\t'.join(str(row[c]) for c in cols))
        return 0, ''.join(line + '\n' for line in lines), ''

    def _split(self, full: str) -> tuple[FDataset, str]:
        ds, _at, name = full.partition('@')
        return self.datasets[ds], name

    def _holds(self, args: list[str]) -> tuple[int, str, str]:
        out = ''
        for full in args[1:]:
            ds, name = self._split(full)
            out += ''.join(f'{full}\t{tag}\tThu May  2 00:00 2024\n' for tag in sorted(ds.snaps[name].holds))
        return 0, out, ''

    def _hold(self, args: list[str]) -> tuple[int, str, str]:
        for full in args[1:]:
            ds, name = self._split(full)
            if args[0] in ds.snaps[name].holds:
                return 1, '', f"cannot hold snapshot '{full}': tag already exists on this dataset\n"
            ds.snaps[name].holds.add(args[0])
        return 0, '', ''

    def _release(self, args: list[str]) -> tuple[int, str, str]:
        for full in args[1:]:
            ds, name = self._split(full)
            ds.snaps[name].holds.discard(args[0])
        return 0, '', ''

    def _create(self, args: list[str]) -> tuple[int, str, str]:
        opts = [a for a in args[:-1] if a != '-o']
        name = args[-1]
        if name.rsplit('/', 1)[0] not in self.datasets:
            return 1, '', f"cannot create '{name}': parent does not exist\n"
        self.datasets[name] = FDataset(props=dict(o.split('=', 1) for o in opts))
        return 0, '', ''

    def _receive(self, args: list[str]) -> tuple[int, str, str]:
        assert args[0] == '-A'
        self.datasets[args[1]].token = None
        if not self.datasets[args[1]].snaps:
            del self.datasets[args[1]]
        return 0, '', ''

    def _destroy(self, args: list[str]) -> tuple[int, str, str]:
        target = args[-1]
        if '#' in target:
            ds, _hash, mark = target.partition('#')
            del self.datasets[ds].marks[mark]
            return 0, '', ''
        ds, name = self._split(target)
        for n in name.split(','):
            if ds.snaps[n].holds:
                return 1, '', f"cannot destroy snapshot {target}: dataset is busy\n"
        for n in name.split(','):
            del ds.snaps[n]
        return 0, '', ''

    def _bookmark(self, args: list[str]) -> tuple[int, str, str]:
        ds, name = self._split(args[0])
        self.datasets[args[1].split('#')[0]].marks[args[1].split('#')[1]] = dataclasses.replace(ds.snaps[name], holds=set())
        return 0, '', ''

    def _send(self, args: list[str]) -> tuple[int, str, str]:
        assert args[:3] == ['-n', '-v', '-P']
        if '-t' in args:
            to = args[args.index('-t') + 1].split('|')[-1]
            ds, name = self._split(to)
            if name not in ds.snaps:
                return 255, '', f"cannot resume send: '{to}' used in the initial send no longer exists\n"
            return 0, 'resume token contents:\nnvlist version: 0\nfull\tx\t500\nsize\t500\n', ''
        return 0, f'full\t{args[-1]}\t4096\nsize\t4096\n', ''


class FakeTransport(Transport):
    def __init__(self, host: FakeHost, name: str | None, kind: str) -> None:
        self.fake = host
        self.host = name
        self.kind = kind
        self.opened = 0

    def open(self) -> None:
        self.opened += 1

    def runner(self) -> FakeHost:
        return self.fake

    def segment(self, stages: t.Sequence[Stage]) -> LocalSegment:
        return LocalSegment([Stage(s.name, s.argv) for s in stages])


class Streams:
    """Applies each pipeline's zfs send to the receiving host like zfs receive would; can cut streams."""

    def __init__(self, src: FakeHost, dst: FakeHost) -> None:
        self.src = src
        self.dst = dst
        self.seen: list[tuple[list[Stage], list[Stage]]] = []
        self.cut_next: str | None = None  # 'partial' leaves a resume token; else a stage name to fail

    def __call__(self, producer: LocalSegment, consumer: LocalSegment, timeout: float | None = None) -> PipelineResult:
        self.seen.append((producer.stages, consumer.stages))
        send = next(s.argv for s in producer.stages if s.name == 'send')
        recv = next(s.argv for s in consumer.stages if s.name == 'receive')
        target = recv[-1]
        assert recv[:4] == ('zfs', 'receive', '-s', '-u')
        args = [a for a in send[2:] if a not in ('-L', '-e', '-c', '-w')]
        if self.cut_next:
            cut, self.cut_next = self.cut_next, None
            if cut == 'partial':
                self.dst.datasets.setdefault(target, FDataset()).token = 'fake|' + '|'.join(args)
                raise PipelineError(['ssh'], 255, 'Connection reset by peer', 'ssh', [])
            raise PipelineError(list(recv), 1, 'cannot receive incremental stream: out of space', cut, [])
        if args[0] == '-t':
            args = args[1].split('|')[1:]
            self.dst.datasets[target].token = None
        if args[0] in ('-i', '-I'):
            self._apply(args[1], args[2], target, force='-F' in recv, intermediates=args[0] == '-I')
        else:
            self._apply(None, args[0], target, force='-F' in recv)
        return PipelineResult(1_000_000, 0.5, [])

    def _apply(self, base: str | None, to: str, target: str, force: bool, intermediates: bool = False) -> None:
        src_ds, to_name = self.src._split(to)
        new = [to_name]
        tgt = self.dst.datasets.get(target)
        if base is not None or (tgt and tgt.snaps):
            assert tgt is not None, 'incremental into a missing dataset'
            if base is None:
                assert force and not tgt.snaps
            else:
                sep = '#' if '#' in base else '@'
                b = (src_ds.marks if sep == '#' else src_ds.snaps)[base.split(sep)[1]]
                copy = next(n for n, s in tgt.snaps.items() if s.guid == b.guid)
                later = [n for n, s in tgt.snaps.items() if s.txg > tgt.snaps[copy].txg]
                assert force or (not later and not tgt.written), 'destination has been modified'
                for n in later:
                    del tgt.snaps[n]
                if intermediates:
                    new = [n for n, s in src_ds.snaps.items() if b.txg < s.txg <= src_ds.snaps[to_name].txg]
        if tgt is None:
            tgt = self.dst.datasets[target] = FDataset(type=src_ds.type)
        for name in new:
            self.dst.txg += 1
            tgt.snaps[name] = FSnap(src_ds.snaps[name].guid, self.dst.txg)
        tgt.written = 0


@pytest.fixture
def lock_dir(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / 'locks')


def setup(monkeypatch: pytest.MonkeyPatch, mode: str = 'push') -> tuple[FakeHost, FakeHost, Streams, dict[str | None, FakeTransport]]:
    src = FakeHost('tank', 'tank/data', 'tank/data/sub')
    dst = src if mode == 'local' else FakeHost('zfsbackups')
    if mode == 'local':
        dst.datasets['zfsbackups'] = FDataset()
    streams = Streams(src, dst)
    monkeypatch.setattr(_replicate_exec, 'run_pipeline', streams)
    remote_kind = 'openssh'
    transports = {
        'local': {None: FakeTransport(src, None, 'local')},
        'push': {None: FakeTransport(src, None, 'local'), 'backup': FakeTransport(dst, 'backup', remote_kind)},
        'pull': {'client1': FakeTransport(src, 'client1', remote_kind), None: FakeTransport(dst, None, 'local')},
    }[mode]
    return src, dst, streams, transports


def params(mode: str = 'push', lock_dir: str = '/tmp', **extra: t.Any) -> dict[str, t.Any]:
    base: dict[str, t.Any] = {'datasets': ['tank/data'], 'target_root': 'zfsbackups/c1', 'lock_dir': lock_dir, 'target_id': 'backup:c1'}
    if mode == 'push':
        base['target_host'] = 'backup'
    if mode == 'pull':
        base['source_host'] = 'client1'
    base.update(extra)
    return base


def run(transports: dict[str | None, FakeTransport], p: dict[str, t.Any], check_mode: bool = False) -> dict[str, t.Any]:
    return replicate(p, check_mode=check_mode, transport_factory=lambda host, kind, opts: transports[host])


TAG = 'pyzfsautosnap:backup:c1'
T = 'zfsbackups/c1/tank/data'


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize('mode', ['push', 'pull', 'local'])
def test_first_run_full_then_nothing(monkeypatch: pytest.MonkeyPatch, lock_dir: str, mode: str) -> None:
    src, dst, streams, transports = setup(monkeypatch, mode)
    src.snap('tank/data', snapname('daily', 1), snapname('hourly', 1, 1), snapname('daily', 2))
    result = run(transports, params(mode, lock_dir))
    assert result['changed'] and result['mode'] == mode
    [ds] = result['datasets']
    assert ds['action'] == 'full' and ds['source'] == 'tank/data' and ds['target'] == T
    assert [s['kind'] for s in ds['steps']] == ['full', 'incremental']
    assert ds['to'] == f'tank/data@{snapname("daily", 2)}'
    assert ds['bytes'] == 2_000_000 and ds['rate'] == 2_000_000
    assert ds['created_parents'] == ['zfsbackups/c1', 'zfsbackups/c1/tank']
    assert dst.datasets['zfsbackups/c1'].props == {'canmount': 'off', 'com.sun:auto-snapshot': 'false'}
    assert list(dst.datasets[T].snaps) == [snapname('daily', 1), snapname('hourly', 1, 1), snapname('daily', 2)]
    # the new common snapshot is held on both sides
    assert src.datasets['tank/data'].snaps[snapname('daily', 2)].holds == {TAG}
    assert dst.datasets[T].snaps[snapname('daily', 2)].holds == {TAG}
    assert sorted(ds['held']) == sorted([f'tank/data@{snapname("daily", 2)}', f'{T}@{snapname("daily", 2)}'])
    # a target that is not there yet is asked for once, not again by name
    side = src if mode == 'local' else dst
    assert sum(1 for c in side.calls if c[:2] == ['zfs', 'list'] and 'receive_resume_token' in ' '.join(c)
               and c[-1] == T) == 1, side.calls

    src.calls.clear()
    dst.calls.clear()
    again = run(transports, params(mode, lock_dir))
    assert not again['changed']
    assert again['datasets'][0]['action'] == 'none' and again['datasets'][0]['steps'] == []
    assert src.mutations() == [] and dst.mutations() == []
    assert len(streams.seen) == 2


def test_incremental_moves_the_hold(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('hourly', 1, 1), snapname('hourly', 1, 2))
    result = run(transports, params(lock_dir=lock_dir))
    [ds] = result['datasets']
    assert ds['action'] == 'incremental'
    assert [(s['kind'], s['intermediates']) for s in ds['steps']] == [('incremental', True)]
    assert ds['from'] == f'tank/data@{snapname("daily", 1)}'
    old, new = snapname('daily', 1), snapname('hourly', 1, 2)
    assert src.datasets['tank/data'].snaps[old].holds == set() and src.datasets['tank/data'].snaps[new].holds == {TAG}
    assert dst.datasets[T].snaps[old].holds == set() and dst.datasets[T].snaps[new].holds == {TAG}
    assert sorted(ds['released']) == sorted([f'tank/data@{old}', f'{T}@{old}'])
    # the new base is held on both sides before either old one is released
    verbs = [c[1] for c in FakeHost.journal[-12:] if c[0] == 'zfs' and c[1] in ('hold', 'release')]
    assert verbs == ['hold', 'hold', 'release', 'release']


@pytest.mark.parametrize('mode', ['push', 'pull'])
def test_commands_per_run_do_not_grow_with_the_tree(monkeypatch: pytest.MonkeyPatch, lock_dir: str, mode: str) -> None:
    counts = {}
    for children in (2, 12):
        src, dst, streams, transports = setup(monkeypatch, mode)
        for i in range(children):
            src.datasets[f'tank/data/c{i}'] = FDataset()
        names = [name for name in src.datasets if name.startswith('tank/data')]
        for name in names:
            src.snap(name, snapname('daily', 1))
        run(transports, params(mode, lock_dir, recursive=True))
        for name in names:
            src.snap(name, snapname('daily', 2))
        src.calls.clear()
        dst.calls.clear()
        streams.seen.clear()
        result = run(transports, params(mode, lock_dir, recursive=True))
        assert [d['action'] for d in result['datasets']] == ['incremental'] * len(names)
        assert all(len(d['held']) == 2 and len(d['released']) == 2 for d in result['datasets'])
        assert len(streams.seen) == len(names)
        counts[children] = ([c[:2] for c in src.calls], [c[:2] for c in dst.calls])
    # only the streams grow with the tree: listings, holds and releases are one call per side
    assert counts[2] == counts[12]


def test_a_failed_stream_still_protects_what_arrived(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    old, new = snapname('daily', 1), snapname('daily', 2)
    for name in ('tank/data', 'tank/data/sub'):
        src.snap(name, old)
    run(transports, params(lock_dir=lock_dir, recursive=True))
    for name in ('tank/data', 'tank/data/sub'):
        src.snap(name, new)

    def cut_sub(producer: LocalSegment, consumer: LocalSegment, timeout: float | None = None) -> PipelineResult:
        if consumer.stages[-1].argv[-1] == T + '/sub':
            streams.cut_next = 'receive'
        return streams(producer, consumer, timeout)

    monkeypatch.setattr(_replicate_exec, 'run_pipeline', cut_sub)
    with pytest.raises(ReplicationError) as info:
        run(transports, params(lock_dir=lock_dir, recursive=True))
    assert 'tank/data/sub' in info.value.msg and 'out of space' in info.value.msg
    # the dataset that arrived has its new base held and the old one released, on both sides
    assert src.datasets['tank/data'].snaps[new].holds == {TAG} and dst.datasets[T].snaps[new].holds == {TAG}
    assert src.datasets['tank/data'].snaps[old].holds == set() and dst.datasets[T].snaps[old].holds == set()
    assert sorted(info.value.results[0]['released']) == sorted([f'tank/data@{old}', f'{T}@{old}'])
    # the one whose stream failed keeps its old base
    assert src.datasets['tank/data/sub'].snaps[old].holds == {TAG} and dst.datasets[T + '/sub'].snaps[old].holds == {TAG}
    assert new not in dst.datasets[T + '/sub'].snaps


def test_a_long_run_protects_as_it_goes(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    for name in ('tank/data', 'tank/data/sub'):
        src.snap(name, snapname('daily', 1))
    monkeypatch.setattr(_replicate, 'PROTECT_INTERVAL', 0.0)
    run(transports, params(lock_dir=lock_dir, recursive=True))
    # with no time to wait, each dataset's base is held right after its own stream
    assert [c for c in src.calls if c[:2] == ['zfs', 'hold']] == [['zfs', 'hold', TAG, f'tank/data@{snapname("daily", 1)}'],
                                                                  ['zfs', 'hold', TAG, f'tank/data/sub@{snapname("daily", 1)}']]


def test_a_failed_command_between_streams_still_protects_what_arrived(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ZfsCommandError

    src, dst, streams, transports = setup(monkeypatch)
    for name in ('tank/data', 'tank/data/sub'):
        src.snap(name, snapname('daily', 1))
    real = _replicate_exec.Executor.ensure_parent

    def failing(self: t.Any, step: t.Any) -> t.Any:
        if step.target.endswith('/sub'):
            raise ZfsCommandError(['zfs', 'create', step.target], 1, '', 'permission denied')
        return real(self, step)

    monkeypatch.setattr(_replicate_exec.Executor, 'ensure_parent', failing)
    with pytest.raises(ZfsCommandError):
        run(transports, params(lock_dir=lock_dir, recursive=True))
    assert src.datasets['tank/data'].snaps[snapname('daily', 1)].holds == {TAG}
    assert dst.datasets[T].snaps[snapname('daily', 1)].holds == {TAG}


def test_stream_shape_push(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir, compression='zstd', source_mbuffer=True, rate_limit='20M', mbuffer_size='256M',
                           receive_properties={'org.example:origin': 'client1'}))
    producer, consumer = streams.seen[0]
    assert [s.name for s in producer] == ['send', 'mbuffer', 'compress']
    assert [s.name for s in consumer] == ['decompress', 'mbuffer', 'receive']
    assert producer[0].argv == ('zfs', 'send', '-L', '-e', '-c', f'tank/data@{snapname("daily", 1)}')
    assert '-r' in producer[1].argv and '-r' not in consumer[1].argv
    assert consumer[1].argv[:6] == ('mbuffer', '-q', '-s', '128k', '-m', '256M')
    recv = consumer[2].argv
    assert recv[-1] == T and '-F' not in recv
    for prop in ('readonly=on', 'canmount=noauto', 'com.sun:auto-snapshot=false', 'org.example:origin=client1'):
        assert prop in recv


def test_local_mode_has_no_compression(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch, 'local')
    src.snap('tank/data', snapname('daily', 1))
    result = run(transports, params('local', lock_dir, compression='lz4'))
    producer, consumer = streams.seen[0]
    assert [s.name for s in producer] == ['send'] and [s.name for s in consumer] == ['mbuffer', 'receive']
    assert any('compression' in w for w in result['warnings'])


def test_recursive_parents_first(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.datasets['tank/data/vol'] = FDataset(type='volume')
    src.datasets['tank/data/secret'] = FDataset(encryption='aes-256-gcm')
    for ds in ('tank/data/sub', 'tank/data', 'tank/data/vol', 'tank/data/secret'):
        src.snap(ds, snapname('daily', 1))
    result = run(transports, params(lock_dir=lock_dir, recursive=True, target_layout='basename'))
    targets = [consumer[-1].argv[-1] for _producer, consumer in streams.seen]
    assert targets == ['zfsbackups/c1/data', 'zfsbackups/c1/data/secret', 'zfsbackups/c1/data/sub', 'zfsbackups/c1/data/vol']
    assert [d['created_parents'] for d in result['datasets']] == [['zfsbackups/c1'], [], [], []]
    secret_send = streams.seen[1][0][0].argv
    assert secret_send[:3] == ('zfs', 'send', '-w')
    vol_recv = streams.seen[3][1][-1].argv
    assert 'canmount=noauto' not in vol_recv and 'readonly=on' in vol_recv


def test_child_without_parent_snapshots_gets_a_placeholder(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data/sub', snapname('daily', 1))
    result = run(transports, params(lock_dir=lock_dir, recursive=True))
    by_source = {d['source']: d for d in result['datasets']}
    assert by_source['tank/data']['action'] == 'none'
    assert by_source['tank/data/sub']['created_parents'] == ['zfsbackups/c1', 'zfsbackups/c1/tank', T]
    assert any('no snapshot' in w for w in result['warnings'])


# ------------------------------------------------------------------ check mode
def test_check_mode_plans_and_changes_nothing(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1), snapname('daily', 2))
    result = run(transports, params(lock_dir=lock_dir), check_mode=True)
    assert result['changed']
    [ds] = result['datasets']
    assert ds['action'] == 'full' and [s['kind'] for s in ds['steps']] == ['full', 'incremental']
    assert ds['estimated_bytes'] == 8192 and [s['estimated_bytes'] for s in ds['steps']] == [4096, 4096]
    assert ds['created_parents'] == ['zfsbackups/c1', 'zfsbackups/c1/tank']
    assert f'{T}@{snapname("daily", 2)}' in ds['held']
    assert streams.seen == [] and src.mutations() == [] and dst.mutations() == []
    assert not pathlib.Path(lock_dir).exists()


# ------------------------------------------------------------------ divergence
def test_diverged_target_fails_before_anything(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    src.snap('tank/data/sub', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir, recursive=True))
    src.snap('tank/data', snapname('daily', 2))
    src.snap('tank/data/sub', snapname('daily', 2))
    dst.snap(T, 'manual-on-target')
    src.calls.clear()
    dst.calls.clear()
    with pytest.raises(ReplicationError) as info:
        run(transports, params(lock_dir=lock_dir, recursive=True))
    assert 'diverged' in info.value.msg and 'manual-on-target' in info.value.msg and 'force_rollback' in info.value.msg
    assert src.mutations() == [] and dst.mutations() == [] and len(streams.seen) == 2
    result = run(transports, params(lock_dir=lock_dir, recursive=True, force_rollback=True))
    by_source = {d['source']: d for d in result['datasets']}
    assert by_source['tank/data']['rollback'] and by_source['tank/data']['steps'][0]['rollback']
    assert not by_source['tank/data/sub']['rollback']
    assert '-F' in streams.seen[2][1][-1].argv and '-F' not in streams.seen[3][1][-1].argv
    assert 'manual-on-target' not in dst.datasets[T].snaps


def test_modified_target(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('daily', 2))
    dst.datasets[T].written = 1236992
    with pytest.raises(ReplicationError, match='modified since its last snapshot'):
        run(transports, params(lock_dir=lock_dir))


# ------------------------------------------------------------------ failures and resume
def test_cut_stream_resumes_next_run(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('daily', 2), snapname('daily', 3))
    streams.cut_next = 'partial'
    with pytest.raises(ReplicationError) as info:
        run(transports, params(lock_dir=lock_dir))
    assert info.value.error is not None and info.value.error.stage == 'ssh'
    assert info.value.as_dict()['stage'] == 'ssh' and info.value.results[-1]['source'] == 'tank/data'
    assert dst.datasets[T].token
    result = run(transports, params(lock_dir=lock_dir))
    [ds] = result['datasets']
    assert ds['action'] == 'resume'
    assert [s['kind'] for s in ds['steps']] == ['resume']
    assert list(dst.datasets[T].snaps)[-1] == snapname('daily', 3)
    assert dst.datasets[T].token is None
    assert dst.datasets[T].snaps[snapname('daily', 3)].holds == {TAG}
    assert not run(transports, params(lock_dir=lock_dir))['changed']


def test_resume_then_more(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('daily', 2))
    dst.datasets[T].token = f'fake|-i|tank/data@{snapname("daily", 1)}|tank/data@{snapname("daily", 2)}'
    src.snap('tank/data', snapname('daily', 3))
    result = run(transports, params(lock_dir=lock_dir))
    [ds] = result['datasets']
    assert ds['action'] == 'resume'
    assert [s['kind'] for s in ds['steps']] == ['resume', 'incremental']
    assert list(dst.datasets[T].snaps) == [snapname('daily', 1), snapname('daily', 2), snapname('daily', 3)]


def test_stale_token_is_aborted(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('daily', 3))
    dst.datasets[T].token = f'fake|-i|tank/data@{snapname("daily", 1)}|tank/data@gone-meanwhile'
    check = run(transports, params(lock_dir=lock_dir), check_mode=True)
    assert check['datasets'][0]['aborted_resume'] and check['datasets'][0]['action'] == 'incremental'
    result = run(transports, params(lock_dir=lock_dir))
    [ds] = result['datasets']
    assert ds['aborted_resume'] and ds['action'] == 'incremental'
    assert ['zfs', 'receive', '-A', T] in dst.calls
    assert list(dst.datasets[T].snaps)[-1] == snapname('daily', 3)


def test_out_of_space_leaves_the_source_alone(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    streams.cut_next = 'receive'
    with pytest.raises(ReplicationError) as info:
        run(transports, params(lock_dir=lock_dir))
    assert 'receive failed' in info.value.msg and 'out of space' in info.value.msg
    assert src.mutations() == []


# ------------------------------------------------------------------ options
def test_target_retention(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', *(snapname('hourly', 1, h) for h in range(5)))
    dst.datasets['zfsbackups/c1'] = FDataset()
    result = run(transports, params(lock_dir=lock_dir, target_retention={'hourly': 2}))
    [ds] = result['datasets']
    assert [p.split('@')[1] for p in ds['pruned']] == [snapname('hourly', 1, h) for h in range(3)]
    assert list(dst.datasets[T].snaps) == [snapname('hourly', 1, 3), snapname('hourly', 1, 4)]
    assert len(src.datasets['tank/data'].snaps) == 5


def test_source_bookmark(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir, source_bookmark=True))
    suffix = bookmark_suffix(TAG)
    assert list(src.datasets['tank/data'].marks) == [snapname('daily', 1) + suffix]
    src.snap('tank/data', snapname('daily', 2))
    result = run(transports, params(lock_dir=lock_dir, source_bookmark=True))
    assert list(src.datasets['tank/data'].marks) == [snapname('daily', 2) + suffix]
    assert result['datasets'][0]['destroyed_bookmarks'] == [f'tank/data#{snapname("daily", 1)}{suffix}']


def test_missing_tools_fail_first(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    dst.tools.discard('mbuffer')
    src.tools.discard('zstd')
    with pytest.raises(ValidationError) as info:
        run(transports, params(lock_dir=lock_dir, compression='zstd'))
    assert 'zstd on the source (localhost)' in str(info.value) and 'mbuffer on the target (backup)' in str(info.value)
    assert dst.mutations() == [] and streams.seen == []


def test_old_zfs_is_refused(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    dst._version = lambda args: (1, '', "unrecognized command 'version'\n")  # type: ignore[method-assign]
    with pytest.raises(ValidationError, match='OpenZFS 0.8'):
        run(transports, params(lock_dir=lock_dir))


def test_labels_and_foreign(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1), snapname('hourly', 1, 1), 'before-upgrade', snapname('daily', 2))
    run(transports, params(lock_dir=lock_dir, labels=['daily']))
    assert list(dst.datasets[T].snaps) == [snapname('daily', 1), snapname('daily', 2)]


@pytest.mark.parametrize('bad, message', [
    ({'source_host': 'a', 'target_host': 'b'}, 'not both'),
    ({'datasets': ['tank/a;rm']}, 'dataset'),
    ({'target_root': 'pool@snap'}, 'target_root'),
    ({'labels': ['minutely']}, 'label'),
    ({'compression': 'gzip'}, 'compression'),
    ({'mbuffer_size': '128M; id'}, 'mbuffer_size'),
    ({'rate_limit': '10M', 'mbuffer': False}, 'mbuffer'),
    ({'target_retention': {'daily': 0}}, 'target_retention'),
    ({'receive_properties': {'Bad Key': 'x'}}, 'receive_properties'),
    ({'receive_properties': {'org.example:x': 'a\nb'}}, 'single-line'),
    ({'target_id': 'a b'}, 'target_id'),
    ({'transport': 'rsh'}, 'transport'),
    ({'ssh_port': 0}, 'ssh_port'),
    ({'no_such_option': 1}, 'unknown'),
])
def test_bad_input(bad: dict[str, t.Any], message: str) -> None:
    p = params(**bad)
    with pytest.raises(ValidationError, match=message):
        replicate(p, transport_factory=lambda *a: pytest.fail('no transport before validation'))


def test_params_dataclass_and_defaults() -> None:
    p = ReplicateParams.from_mapping({'datasets': ['tank/a'], 'target_root': 'b', 'recursive': None}).validated()
    assert p.recursive is False and p.mbuffer and p.mode == 'local' and p.mbuffer_size == '128M'
    assert ReplicateParams(datasets=['tank/a'], target_root='b', source_host='c').mode == 'pull'
    with pytest.raises(ValidationError, match='required'):
        ReplicateParams.from_mapping({'datasets': []})


def test_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, t.Any] = {}

    def fake(params: dict[str, t.Any], check_mode: bool = False) -> dict[str, t.Any]:
        seen.update(params, check_mode=check_mode)
        return {'changed': False, 'datasets': []}

    monkeypatch.setattr(_replicate, 'replicate', fake)
    out = cli_replicate(['tank/data', 'tank/home', '--target-root', 'zfsbackups/c1', '--target-host', 'backup', '-r',
                         '--label', 'daily', '--target-retention', 'daily=7', '--receive-property', 'org.example:x=1',
                         '--compression', 'zstd', '--no-mbuffer', '--check', '--sep', '-'])
    assert out == {'changed': False, 'datasets': []}
    assert seen['datasets'] == ['tank/data', 'tank/home'] and seen['recursive'] and seen['check_mode']
    assert seen['target_retention'] == {'daily': '7'} and seen['receive_properties'] == {'org.example:x': '1'}
    assert seen['mbuffer'] is False and seen['labels'] == ['daily'] and seen['separator'] == '-'
    assert set(seen) - {'check_mode'} <= {f.name for f in dataclasses.fields(ReplicateParams)}


def test_cli_reports_failures() -> None:
    out = cli_replicate(['tank/data', '--target-root', 'zfsbackups/c1', '--target-host=-oProxyCommand=id'])
    assert out['failed'] and 'host' in out['msg']


def test_excluded_root_still_finds_existing_targets(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data/sub', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir, recursive=True, exclude=['tank/data']))
    src.snap('tank/data/sub', snapname('daily', 2))
    result = run(transports, params(lock_dir=lock_dir, recursive=True, exclude=['tank/data']))
    [ds] = result['datasets']
    assert ds['source'] == 'tank/data/sub' and ds['action'] == 'incremental'


# ------------------------------------------------------------------ plan, then execute
def _comparable(ds: dict[str, t.Any]) -> dict[str, t.Any]:
    """A dataset result without what only a run can measure (notes: a run reports its last plan's, warnings all)."""
    measured = ('bytes', 'seconds', 'rate', 'estimated_bytes')
    out = {k: v for k, v in ds.items() if k not in (*measured, 'notes')}
    out['steps'] = [{k: v for k, v in s.items() if k not in measured} for s in ds['steps']]
    out['held'], out['released'] = sorted(ds['held']), sorted(ds['released'])
    return out


def _fresh(src: FakeHost, dst: FakeHost, first_run: t.Callable[[], t.Any]) -> None:
    src.snap('tank/data', snapname('hourly', 1, 0), snapname('daily', 1), snapname('hourly', 1, 1))


def _incremental(src: FakeHost, dst: FakeHost, first_run: t.Callable[[], t.Any]) -> None:
    src.snap('tank/data', snapname('hourly', 1, 0), snapname('daily', 1))
    first_run()
    src.snap('tank/data', *(snapname('hourly', 1, h) for h in range(1, 5)))


def _stale_token(src: FakeHost, dst: FakeHost, first_run: t.Callable[[], t.Any]) -> None:
    _incremental(src, dst, first_run)
    dst.datasets[T].token = f'fake|-i|tank/data@{snapname("daily", 1)}|tank/data@gone-meanwhile'


@pytest.mark.parametrize('prepare', [
    pytest.param(_fresh, id='first run'),
    pytest.param(_incremental, id='incremental, hold moved, bookmark replaced, target pruned'),
    pytest.param(_stale_token, id='stale token aborted'),
])
@pytest.mark.parametrize('mode', ['push', 'local'])
def test_check_mode_reports_what_the_run_then_does(monkeypatch: pytest.MonkeyPatch, lock_dir: str, mode: str,
                                                   prepare: t.Callable[..., None]) -> None:
    src, dst, streams, transports = setup(monkeypatch, mode)
    p = params(mode, lock_dir, source_bookmark=True, target_retention={'hourly': 2})
    prepare(src, dst, lambda: run(transports, p))
    mutations = (len(src.mutations()), len(dst.mutations()), len(streams.seen))
    check = run(transports, p, check_mode=True)
    assert (len(src.mutations()), len(dst.mutations()), len(streams.seen)) == mutations
    real = run(transports, p)
    assert check['changed'] and real['changed']
    assert [_comparable(d) for d in check['datasets']] == [_comparable(d) for d in real['datasets']]
    assert check['warnings'] == real['warnings']
    again = run(transports, p, check_mode=True)
    assert not again['changed'] and not run(transports, p)['changed']


def test_check_mode_of_a_resume_says_more_may_follow(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('daily', 2), snapname('daily', 3))
    dst.datasets[T].token = f'fake|-i|tank/data@{snapname("daily", 1)}|tank/data@{snapname("daily", 2)}'
    [ds] = run(transports, params(lock_dir=lock_dir), check_mode=True)['datasets']
    assert ds['action'] == 'resume' and [s['kind'] for s in ds['steps']] == ['resume'] and ds['held'] == []
    assert 'more steps may follow once the interrupted stream is finished' in ds['notes']
    # the run re-plans after the resume: the incremental that follows is found from fresh listings
    [done] = run(transports, params(lock_dir=lock_dir))['datasets']
    assert [s['kind'] for s in done['steps']] == ['resume', 'incremental'] and done['to'] == f'tank/data@{snapname("daily", 3)}'


def test_replanning_is_bounded(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    run(transports, params(lock_dir=lock_dir))
    src.snap('tank/data', snapname('daily', 2))
    dst.datasets[T].token = f'fake|-i|tank/data@{snapname("daily", 1)}|tank/data@{snapname("daily", 2)}'

    def never_finishes(producer: LocalSegment, consumer: LocalSegment, timeout: float | None = None) -> PipelineResult:
        streams.seen.append((producer.stages, consumer.stages))
        return PipelineResult(10, 0.1, [])

    monkeypatch.setattr(_replicate_exec, 'run_pipeline', never_finishes)
    with pytest.raises(ReplicationError, match='still needs work after 3 rounds') as info:
        run(transports, params(lock_dir=lock_dir))
    assert [type(c) for c in info.value.conflicts] == [TooManyRounds]
    assert len(streams.seen) == 1 + _replicate.MAX_REPLANS
    assert info.value.results[-1]['source'] == 'tank/data' and len(info.value.results[-1]['steps']) == 3


def test_conflicts_are_typed_and_nothing_runs(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    dst.datasets['zfsbackups/c1'] = FDataset()
    dst.datasets['zfsbackups/c1/tank'] = FDataset()
    dst.datasets[T] = FDataset()
    dst.snap(T, 'unrelated')
    with pytest.raises(ReplicationError, match='not a replica of this source') as info:
        run(transports, params(lock_dir=lock_dir))
    assert [type(c) for c in info.value.conflicts] == [NotAReplica]
    assert dst.mutations() == [] and streams.seen == []


@pytest.mark.parametrize('check_mode', [False, True])
def test_missing_target_pool_is_a_conflict(monkeypatch: pytest.MonkeyPatch, lock_dir: str, check_mode: bool) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    with pytest.raises(ReplicationError, match='target pool nopool does not exist') as info:
        run(transports, params(lock_dir=lock_dir, target_root='nopool/c1'), check_mode=check_mode)
    assert [type(c) for c in info.value.conflicts] == [MissingPool]
    assert info.value.results[-1]['source'] == 'tank/data' and not info.value.results[-1]['changed']
    assert dst.mutations() == [] and streams.seen == []


def test_an_interrupted_run_names_the_dataset(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    src, dst, streams, transports = setup(monkeypatch)
    for name in ('tank/data', 'tank/data/sub'):
        src.snap(name, snapname('daily', 1))

    def interrupted(producer: LocalSegment, consumer: LocalSegment, timeout: float | None = None) -> PipelineResult:
        if consumer.stages[-1].argv[-1] == T + '/sub':
            raise Interrupted(15)
        return streams(producer, consumer, timeout)

    monkeypatch.setattr(_replicate_exec, 'run_pipeline', interrupted)
    with pytest.raises(Interrupted) as info:
        run(transports, params(lock_dir=lock_dir, recursive=True))
    assert getattr(info.value, 'dataset', None) == 'tank/data/sub'
