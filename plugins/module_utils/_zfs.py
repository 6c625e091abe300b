# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one place that runs ``zfs``.

Every call goes through :class:`Zfs`, which builds argv lists (never shell
strings), hands them to a :class:`Runner` (local subprocess or a remote
transport) and turns failures into :class:`ZfsCommandError` carrying the
command, rc and stderr. Parsing of the output lives in ``_zfs_parse`` so it
can be tested on recorded output without running anything.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import typing as t

from ._types import Dataset, Features, Snapshot, ZfsCommandError
from . import _zfs_parse as parse

# Linux refuses any single argument longer than MAX_ARG_STRLEN (32 pages, with
# its NUL) with E2BIG, whatever ARG_MAX says. Through ssh the whole command line
# travels as ONE argument (of ssh here, of the login shell there), quoted, so an
# argv must fit one argument's worth once quoted, with room for `env LC_ALL=C`.
MAX_ARG_STRLEN = 128 * 1024
# half of it: the remote shell's own quoting and the pipeline stages around the command share that argument
MAX_ARGV_BYTES = MAX_ARG_STRLEN // 2

SNAPSHOT_COLUMNS = ('name', 'guid', 'createtxg', 'creation', 'userrefs', 'clones')

# the properties of the parents the engine creates on a target: never mounted, never snapshotted there
PARENT_PROPERTIES: t.Mapping[str, str] = {'canmount': 'off', 'com.sun:auto-snapshot': 'false'}

# What a backup server's forced command (``serve``) sets on every receive, whatever the client asked for:
# a replica is never mounted, never writable, never snapshotted by the server's own autosnap, and once an
# administrator mounts it, runs nothing from it.
INERT_PROPERTIES: t.Mapping[str, str] = {
    'readonly': 'on', 'com.sun:auto-snapshot': 'false',
    'canmount': 'noauto', 'exec': 'off', 'setuid': 'off', 'devices': 'off',
}
# ... and takes from the stream only as inherited from the server's own datasets: where it would be
# mounted or shared, namespaces, SELinux mount contexts, and space taken from every other client
SERVE_EXCLUDED_PROPERTIES = (
    'mountpoint', 'sharenfs', 'sharesmb', 'zoned', 'context', 'fscontext', 'defcontext', 'rootcontext',
    'reservation', 'refreservation',
)
# Properties that apply to filesystems only: a non-recursive receive refuses them for a volume
_FILESYSTEM_ONLY = frozenset(('canmount', 'exec', 'setuid', 'devices', 'mountpoint', 'sharenfs', 'sharesmb', 'zoned',
                              'context', 'fscontext', 'defcontext', 'rootcontext'))
# when a snapshot reached this backup server, in seconds since the epoch, by the server's clock; set by
# `serve` after each receive, read by the server's own retention; a client can neither set nor steer it
STAMP_PROPERTY = 'pyzfsautosnap:received'


@dataclasses.dataclass
class CommandResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str


class Runner(t.Protocol):
    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        ...


class LocalRunner:
    """Runs argv lists on this host; records each argv so callers can count processes."""

    def __init__(self, env: t.Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        # zfs output must not be localised: parsers rely on the C locale
        self.env['LC_ALL'] = 'C'
        self.calls: list[list[str]] = []

    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=self.env, check=False)
        except OSError as exc:
            raise ZfsCommandError(argv, 127, '', str(exc)) from exc
        result = CommandResult(argv, proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace'))
        if check and result.rc != 0:
            raise ZfsCommandError(argv, result.rc, result.stdout, result.stderr)
        return result


def _quoted_len(arg: str) -> int:
    return len(shlex.quote(arg).encode('utf-8')) + 1


def batch_by_size(items: t.Sequence[str], fixed: t.Sequence[str], limit: int = MAX_ARGV_BYTES) -> list[list[str]]:
    """Split *items* into batches whose argv (with *fixed* prefix) stays under *limit* bytes, quoted."""
    base = sum(_quoted_len(a) for a in fixed)
    batches: list[list[str]] = []
    current: list[str] = []
    size = base
    for item in items:
        cost = _quoted_len(item)
        if current and size + cost > limit:
            batches.append(current)
            current, size = [], base
        current.append(item)
        size += cost
    if current:
        batches.append(current)
    return batches


def destroy_batches(dataset: str, names: t.Sequence[str], fixed: t.Sequence[str] = ('zfs', 'destroy'),
                    limit: int = MAX_ARGV_BYTES) -> list[list[str]]:
    """Split snapshot *names* of one dataset so each ``ds@a,b,c`` argument (and argv) stays under *limit*.

    All the names share one argument, so it is that argument, not the argv count,
    that meets MAX_ARG_STRLEN first: about 3,400 default-prefix names.
    """
    base = sum(_quoted_len(a) for a in fixed) + _quoted_len(f'{dataset}@') + 2  # +2: quotes if any name needs them
    batches: list[list[str]] = []
    current: list[str] = []
    size = base
    for name in names:
        cost = len(name.encode('utf-8')) + 1  # the name and its comma
        if current and size + cost > limit:
            batches.append(current)
            current, size = [], base
        current.append(name)
        size += cost
    if current:
        batches.append(current)
    return batches


# ------------------------------------------------- stream argv (run by the pipeline)
def send_argv(send_args: t.Sequence[str], raw: bool, zfs: str = 'zfs') -> tuple[str, ...]:
    """``zfs send``: raw for encrypted datasets (data stays encrypted), else large blocks, embedded, compressed."""
    if send_args and send_args[0] == '-t':
        # flags of a resumed send are part of its token
        return (zfs, 'send', *send_args)
    flags = ('-w',) if raw else ('-L', '-e', '-c')
    return (zfs, 'send', *flags, *send_args)


def estimate_argv(send_args: t.Sequence[str], raw: bool, zfs: str = 'zfs') -> tuple[str, ...]:
    full = send_argv(send_args, raw, zfs)
    return (full[0], full[1], '-n', '-v', '-P', *full[2:])


def receive_argv(target: str, *, filesystem: bool, rollback: bool, properties: t.Mapping[str, str],
                 exclude: t.Sequence[str] = (), zfs: str = 'zfs') -> tuple[str, ...]:
    """``zfs receive -s -u``: resumable, never mounted, read-only, never snapshotted by the target's autosnap."""
    props = {'readonly': 'on', 'com.sun:auto-snapshot': 'false'}
    if filesystem:
        props['canmount'] = 'noauto'
    props.update(properties)
    if not filesystem:
        props.pop('canmount', None)
    argv = [zfs, 'receive', '-s', '-u']
    if rollback:
        argv.append('-F')
    for key, value in props.items():
        argv += ['-o', f'{key}={value}']
    for key in exclude:
        argv += ['-x', key]
    argv.append(target)
    return tuple(argv)


def inert_receive_argv(target: str, *, filesystem: bool, properties: t.Mapping[str, str] | None = None,
                       exclude: t.Sequence[str] = (), zfs: str = 'zfs') -> tuple[str, ...]:
    """``zfs receive`` as a backup server runs it for a client: never -F, every inert property forced."""
    forced = {k: v for k, v in INERT_PROPERTIES.items() if filesystem or k not in _FILESYSTEM_ONLY}
    excluded = [k for k in SERVE_EXCLUDED_PROPERTIES if filesystem or k not in _FILESYSTEM_ONLY]
    props = {k: v for k, v in (properties or {}).items() if k not in forced and k not in excluded}
    props.update(forced)
    argv = [zfs, 'receive', '-s', '-u']
    for key, value in props.items():
        argv += ['-o', f'{key}={value}']
    for key in dict.fromkeys([*excluded, *(k for k in exclude if k not in forced)]):
        argv += ['-x', key]
    argv.append(target)
    return tuple(argv)


class Zfs:
    """Typed wrapper over the zfs CLI of one host (local or remote through its runner)."""

    def __init__(self, runner: Runner, zfs: str = 'zfs') -> None:
        self.runner = runner
        self.zfs = zfs
        self._features: Features | None = None
        self.warnings: list[str] = []

    # ----------------------------------------------------------------- basics
    def _run(self, *args: str, check: bool = True) -> CommandResult:
        # private: argv for zfs is built by the methods of this class and nowhere else
        return self.runner.run([self.zfs, *args], check=check)

    @property
    def features(self) -> Features:
        if self._features is None:
            self._features = self._detect_features()
        return self._features

    def _detect_features(self) -> Features:
        res = self._run('version', check=False)
        if res.rc == 0:
            return parse.features_from_version(res.stdout)
        # No `zfs version`: older OpenZFS or a legacy CLI. Probe the one thing we
        # depend on most; an unknown option is reported by usage text, not a crash.
        probe = self._run('list', '-H', '-p', '-o', 'name', '-t', 'filesystem', '-d', '0', check=False)
        if probe.rc != 0 and parse.is_usage_error(probe.stderr):
            return Features(version=None, parsable_list=False, multi_snapshot=False, bookmarks=False, resume=False)
        return Features(version=None, bookmarks=False, resume=False)

    def pools(self) -> list[str]:
        res = self.runner.run(['zpool', 'list', '-H', '-o', 'name'])
        return [line for line in res.stdout.splitlines() if line]

    # --------------------------------------------------------------- listings
    def list_datasets(self, roots: t.Sequence[str] | None, recursive: bool = True,
                      user_props: t.Sequence[str] = (), with_written: bool = False,
                      with_resume_token: bool = False) -> list[Dataset]:
        """One listing of filesystems and volumes under *roots* (all pools when None).

        A dataset whose user property values hold a tab comes back ``unreadable``; a listing whose rows
        cannot be told apart is a :class:`ZfsCommandError`.
        """
        cols = ['name', 'type']
        if with_written:
            cols.append('written')
        if with_resume_token and self.features.resume:
            cols.append('receive_resume_token')
        cols.extend(user_props)
        if self.features.parsable_list:
            argv = ['list', '-H', '-p', '-t', 'filesystem,volume', '-o', ','.join(cols)]
        else:
            argv = ['list', '-H', '-t', 'filesystem,volume', '-o', ','.join(cols)]
        if recursive and roots:
            argv.append('-r')
        if not recursive and roots:
            argv.extend(['-d', '0'])
        argv.extend(roots or [])
        res = self._run(*argv)
        try:
            datasets = parse.datasets(res.stdout, cols)
        except parse.AmbiguousOutput as exc:
            raise ZfsCommandError([self.zfs, *argv], 0, '', str(exc)) from None
        if not self.features.parsable_list and with_written:
            datasets = self._legacy_fill_numbers(datasets)
        return datasets

    def _legacy_fill_numbers(self, datasets: list[Dataset]) -> list[Dataset]:
        # Without -p, `written` prints as "1.5K"; ask `zfs get -Hp` per dataset instead.
        filled = []
        for ds in datasets:
            res = self._run('get', '-H', '-p', '-o', 'value', 'written', ds.name, check=False)
            value = res.stdout.strip() if res.rc == 0 else '-'
            filled.append(dataclasses.replace(ds, written=parse.to_int(value)))
        return filled

    def list_snapshots(self, roots: t.Sequence[str] | None, recursive: bool = True,
                       bookmarks: bool = False) -> list[Snapshot]:
        """One listing of all snapshots (and bookmarks) under *roots* with what decisions need."""
        types = 'snapshot,bookmark' if bookmarks and self.features.bookmarks else 'snapshot'
        if not self.features.parsable_list:
            return self._legacy_list_snapshots(roots, recursive)
        argv = ['list', '-H', '-p', '-t', types, '-o', ','.join(SNAPSHOT_COLUMNS)]
        if not roots:
            return parse.snapshots(self._run(*argv).stdout, SNAPSHOT_COLUMNS)
        argv.extend(['-r'] if recursive else ['-d', '1'])
        snaps: list[Snapshot] = []
        for batch in batch_by_size(roots, [self.zfs, *argv]):
            snaps.extend(parse.snapshots(self._run(*argv, *batch).stdout, SNAPSHOT_COLUMNS))
        return snaps

    def _legacy_list_snapshots(self, roots: t.Sequence[str] | None, recursive: bool) -> list[Snapshot]:
        argv = ['list', '-H', '-t', 'snapshot', '-o', 'name']
        if roots:
            argv.append('-r')
            argv.extend(roots)
        names = [n for n in self._run(*argv).stdout.splitlines() if n]
        if roots and not recursive:
            names = [n for n in names if n.split('@', 1)[0] in roots]
        by_dataset: dict[str, list[str]] = {}
        for name in names:
            by_dataset.setdefault(name.split('@', 1)[0], []).append(name)
        props = ('guid', 'createtxg', 'creation', 'userrefs')
        snaps: list[Snapshot] = []
        for ds_names in by_dataset.values():
            for batch in batch_by_size(ds_names, [self.zfs, 'get', '-H', '-p', '-o', 'name,property,value', ','.join(props)]):
                res = self._run('get', '-H', '-p', '-o', 'name,property,value', ','.join(props), *batch)
                snaps.extend(parse.snapshots_from_get(res.stdout))
        return snaps

    def property_sources(self, names: t.Sequence[str], props: t.Sequence[str]) -> dict[str, dict[str, str]]:
        """Per dataset, the `zfs get` SOURCE of *props* ('local', 'inherited from tank', '-', ...).

        A dataset destroyed since the listing is left out; any other failure raises.
        """
        argv = ['get', '-H', '-o', 'name,property,source', ','.join(props)]
        out: dict[str, dict[str, str]] = {}
        for batch in batch_by_size(names, [self.zfs, *argv]):
            res = self._run(*argv, *batch, check=False)
            if res.rc != 0 and parse.error_kind(res.stderr) != 'missing':
                raise ZfsCommandError(res.argv, res.rc, res.stdout, res.stderr)
            for name, found in parse.property_sources(res.stdout).items():
                out.setdefault(name, {}).update(found)
        return out

    def exists(self, name: str) -> bool:
        res = self._run('list', '-H', '-o', 'name', name, check=False)
        return res.rc == 0

    # ---------------------------------------------------------------- changes
    def snapshot(self, full_names: t.Sequence[str], props: t.Mapping[str, str] | None = None) -> list[list[str]]:
        """Create snapshots; names of one pool share a transaction group when the CLI allows.

        Returns the argv batches actually run, so callers can report atomicity.
        """
        opts: list[str] = []
        for key, value in (props or {}).items():
            opts.extend(['-o', f'{key}={value}'])
        if not self.features.multi_snapshot:
            if len(full_names) > 1:
                self.warnings.append('this zfs CLI takes one snapshot per call: snapshots of one run are not atomic')
            for name in full_names:
                self._run('snapshot', *opts, name)
            return [[n] for n in full_names]
        batches = self.snapshot_batches(full_names, opts)
        for batch in batches:
            self._run('snapshot', *opts, *batch)
        return batches

    def snapshot_batches(self, full_names: t.Sequence[str], opts: t.Sequence[str] = ()) -> list[list[str]]:
        """How :meth:`snapshot` splits *full_names* into calls; one batch unless the argument limit forces more."""
        return batch_by_size(full_names, [self.zfs, 'snapshot', *opts])

    def destroy_batches(self, dataset: str, names: t.Sequence[str]) -> list[list[str]]:
        """How *names* of *dataset* split into :meth:`destroy_snapshots` calls that fit the argument limit."""
        return destroy_batches(dataset, names, (self.zfs, 'destroy'))

    def destroy_snapshots(self, dataset: str, names: t.Sequence[str]) -> CommandResult:
        """Destroy snapshots of one dataset in one call: ``zfs destroy ds@a,b,c``. Never recursive.

        One call is all or nothing; split long lists with :meth:`destroy_batches` first.
        """
        if not names:
            raise ValueError('nothing to destroy')
        for name in names:
            # ',' separates and '%' spans a range in `zfs destroy ds@a%b`: either would widen the batch
            if not name or any(c in name for c in '@,/%#'):
                raise ValueError(f'refusing to destroy an unsafe snapshot name: {name!r}')
        arg = f'{dataset}@{",".join(names)}'
        if len(arg.encode('utf-8')) > MAX_ARGV_BYTES:
            # callers split with destroy_batches; one argument past the kernel's limit fails every later run
            raise ValueError(f'destroy batch of {len(names)} names is too long for one argument; split it with destroy_batches')
        return self._run('destroy', arg, check=False)

    def hold(self, tag: str, full_names: t.Sequence[str]) -> None:
        for batch in batch_by_size(full_names, [self.zfs, 'hold', tag]):
            self._run('hold', tag, *batch)

    def release(self, tag: str, full_names: t.Sequence[str], check: bool = True) -> None:
        for batch in batch_by_size(full_names, [self.zfs, 'release', tag]):
            self._run('release', tag, *batch, check=check)

    def holds(self, full_names: t.Sequence[str]) -> dict[str, list[str]]:
        """Tags held on each snapshot, for the names given (one call per argv batch)."""
        out: dict[str, list[str]] = {n: [] for n in full_names}
        for batch in batch_by_size(full_names, [self.zfs, 'holds', '-H']):
            res = self._run('holds', '-H', *batch)
            for name, tag in parse.holds(res.stdout):
                out.setdefault(name, []).append(tag)
        return out

    def create_filesystem(self, name: str, props: t.Mapping[str, str]) -> None:
        """One ``zfs create -o k=v name``; never ``-p``, which ignores ``-o`` for the parents it makes."""
        opts = [arg for key, value in props.items() for arg in ('-o', f'{key}={value}')]
        self._run('create', *opts, name)

    def destroy_bookmark(self, full_name: str) -> None:
        """Destroy one bookmark ``ds#mark``; anything else is refused before zfs sees it."""
        dataset, sep, mark = full_name.partition('#')
        if not sep or not dataset or not mark or any(c in mark for c in '@,/%#'):
            raise ValueError(f'refusing to destroy {full_name!r}: not a single bookmark')
        self._run('destroy', full_name)

    def send_estimate(self, send_args: t.Sequence[str], raw: bool) -> CommandResult:
        """``zfs send -nvP``: what a send would transfer; the caller reads rc and the size."""
        return self.runner.run(estimate_argv(send_args, raw, self.zfs), check=False)

    def bookmark(self, snapshot: str, bookmark: str) -> None:
        self._run('bookmark', snapshot, bookmark)

    def receive_abort(self, dataset: str) -> None:
        self._run('receive', '-A', dataset)

    # ------------------------------------------------- a backup server's forced command
    def version_result(self) -> CommandResult:
        return self._run('version', check=False)

    def list_result(self, options: t.Sequence[str], names: t.Sequence[str]) -> CommandResult:
        """``zfs list OPTIONS NAMES`` with the output as it is; the caller checked both."""
        if not names:
            raise ValueError('a listing without names would list every pool')
        return self._run('list', *options, *names, check=False)

    def holds_result(self, names: t.Sequence[str]) -> CommandResult:
        return self._run('holds', '-H', *names, check=False)

    def hold_result(self, verb: t.Literal['hold', 'release'], tag: str, names: t.Sequence[str]) -> CommandResult:
        return self._run(verb, tag, *names, check=False)

    def create_result(self, name: str, props: t.Mapping[str, str]) -> CommandResult:
        opts = [arg for key, value in props.items() for arg in ('-o', f'{key}={value}')]
        return self._run('create', *opts, name, check=False)

    def received_tree(self, target: str) -> list[tuple[str, str, str, str, str]] | None:
        """(name, type, canmount, readonly, arrival stamp) of *target*, its descendants and snapshots; None if missing."""
        cols = ('name', 'type', 'canmount', 'readonly', STAMP_PROPERTY)
        res = self._run('list', '-H', '-p', '-r', '-t', 'filesystem,volume,snapshot', '-o', ','.join(cols), target,
                        check=False)
        if res.rc != 0:
            if parse.error_kind(res.stderr) == 'missing':
                return None
            raise ZfsCommandError(res.argv, res.rc, res.stdout, res.stderr)
        try:
            rows = parse.rows(res.stdout, len(cols))
            return t.cast('list[tuple[str, str, str, str, str]]', rows)
        except ValueError as exc:
            # a stream can carry a stamp value with a tab or newline in it: no guessing which row is which
            raise ZfsCommandError(res.argv, 0, '', f'unreadable listing: {exc}') from None

    def list_received(self, roots: t.Sequence[str]) -> list[tuple[Snapshot, str]]:
        """Every snapshot under *roots* with what retention needs, and its arrival stamp ('-' for none)."""
        cols = (*SNAPSHOT_COLUMNS, STAMP_PROPERTY)
        argv = ['list', '-H', '-p', '-t', 'snapshot', '-o', ','.join(cols), '-r']
        out: list[tuple[Snapshot, str]] = []
        for batch in batch_by_size(roots, [self.zfs, *argv]):
            res = self._run(*argv, *batch)
            try:
                out.extend(parse.received_snapshots(res.stdout, cols))
            except ValueError as exc:
                raise ZfsCommandError(res.argv, 0, '', f'unreadable listing: {exc}') from None
        return out

    def inherit_property(self, prop: str, names: t.Sequence[str]) -> None:
        """``zfs inherit prop`` on *names* (a user property: removed where it was set)."""
        for batch in batch_by_size(names, [self.zfs, 'inherit', prop]):
            self._run('inherit', prop, *batch)

    def set_property(self, prop: str, value: str, names: t.Sequence[str]) -> None:
        """``zfs set prop=value`` on *names*, in as few calls as the argument limit allows."""
        for batch in batch_by_size(names, [self.zfs, 'set', f'{prop}={value}']):
            self._run('set', f'{prop}={value}', *batch)
