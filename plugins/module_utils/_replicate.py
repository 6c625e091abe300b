# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Replication: list both sides once, plan every dataset, then stream, protect and prune.

Everything is planned before anything changes, so a diverged dataset fails the
run with nothing touched. Datasets then go parents first, one stream per step.
After the streams (also when one of them failed, and at least once a minute
during a long run) each new common snapshot is held on both sides before the
previous one is released, so no pruner can break the chain. The holds of those
datasets go in one ``zfs hold`` per side: on a tree of hundreds of datasets,
processes per dataset are what a run costs.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing as t

from ._lock import locked
from ._pipeline import mbuffer_argv, receiver_stages, run_pipeline, sender_stages
from ._replicate_plan import (
    DatasetPlan, Selection, Step, hold_tag, map_targets, outer_roots,
    plan_bookmark, plan_dataset, plan_holds, plan_target_prune, select_datasets, target_for,
)
from ._replicate_options import ReplicateParams
from ._transport import Transport, which_argv
from ._transport_factory import make_transport
from ._types import Dataset, Snapshot, ValidationError, ZfsCommandError
from ._zfs import Zfs, receive_argv, send_argv
from ._zfs_parse import is_stale_token_error, parse_send_size

MAX_REPLANS = 3
# seconds a replicated dataset may wait for the batched hold of its new base
PROTECT_INTERVAL = 60.0
_LOCK_UNSAFE_RE = re.compile(r'[^A-Za-z0-9_.:+-]')


class ReplicationError(Exception):
    """A run failed; carries the per-dataset results so far and the failed command, if any."""

    def __init__(self, msg: str, results: list[dict[str, t.Any]] | None = None, error: ZfsCommandError | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.results = results or []
        self.error = error

    def as_dict(self) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {'msg': self.msg, 'datasets': self.results}
        if self.error is not None:
            out.update(self.error.as_dict())
        return out


def _lock_key(kind: str, host: str | None, name: str) -> str:
    key = f'replicate-{kind}.{host or "local"}.{name.replace("/", "+")}'
    return _LOCK_UNSAFE_RE.sub('_', key)[:200]


def _group(snaps: t.Iterable[Snapshot]) -> dict[str, list[Snapshot]]:
    out: dict[str, list[Snapshot]] = {}
    for snap in snaps:
        out.setdefault(snap.dataset, []).append(snap)
    return out


def _changed(res: t.Mapping[str, t.Any]) -> bool:
    if 'bytes' not in res:
        # a bare plan: nothing ran
        return False
    return bool(res.get('changed') or res.get('steps') and res.get('action') != 'none' or any(
        res.get(k) for k in ('aborted_resume', 'created_parents', 'held', 'released', 'bookmarked', 'destroyed_bookmarks', 'pruned')))


def _missing(exc: ZfsCommandError) -> bool:
    return 'does not exist' in exc.stderr


@dataclasses.dataclass
class _Done:
    """A dataset whose streams are through; its chain is protected with the others'."""

    plan: DatasetPlan
    res: dict[str, t.Any]
    src_snaps: list[Snapshot]
    # None: the target changed, list it again
    tgt_snaps: list[Snapshot] | None


class _Run:
    """One replication run; holds the two sides and the results so far."""

    def __init__(self, p: ReplicateParams, src_t: Transport, dst_t: Transport, check_mode: bool) -> None:
        self.p = p
        self.src_t = src_t
        self.dst_t = dst_t
        self.check_mode = check_mode
        self.src = Zfs(src_t.runner())
        self.dst = Zfs(dst_t.runner())
        self.selection = Selection(p.prefix, p.separator, tuple(p.labels), p.include_foreign)
        self.roots = outer_roots(p.datasets, p.recursive)
        self.tag = hold_tag(p.target_id or p.default_target_id())
        self.deadline = time.monotonic() + p.timeout if p.timeout else None
        self.results: list[dict[str, t.Any]] = []
        self.warnings: list[str] = []
        self.known_targets: set[str] = set()

    # ------------------------------------------------------------------ listing
    def _check_features(self) -> None:
        for side, zfs, transport in (('source', self.src, self.src_t), ('target', self.dst, self.dst_t)):
            features = zfs.features
            if features.legacy or not features.resume:
                raise ValidationError(f'zfs on the {side} ({transport.describe()}, version {features.version or "unknown"}) '
                                      'lacks resumable send/receive; replication needs OpenZFS 0.8 or later')

    def _target_datasets(self, names: t.Sequence[str], recursive: bool) -> list[Dataset]:
        def listing(roots: t.Sequence[str]) -> list[Dataset]:
            return self.dst.list_datasets(roots, recursive=recursive, with_written=True, with_resume_token=True)
        try:
            return listing(names)
        except ZfsCommandError as exc:
            if not _missing(exc):
                raise
        found: list[Dataset] = []
        for name in names:
            try:
                found.extend(listing([name]))
            except ZfsCommandError as exc:
                if not _missing(exc):
                    raise
        return found

    def _remember(self, names: t.Iterable[str]) -> None:
        for name in names:
            parts = name.split('/')
            self.known_targets.update('/'.join(parts[:i]) for i in range(1, len(parts) + 1))

    def _plan(self, ds: Dataset, target: str, src_snaps: t.Sequence[Snapshot], tgt: Dataset | None,
              tgt_snaps: t.Sequence[Snapshot], *, stale: bool = False) -> DatasetPlan:
        return plan_dataset(ds, target, src_snaps, tgt, tgt_snaps, selection=self.selection,
                            force_rollback=self.p.force_rollback, stale_token=stale)

    def _relist(self, ds: Dataset, target: str) -> tuple[list[Snapshot], Dataset | None, list[Snapshot]]:
        src_snaps = self.src.list_snapshots([ds.name], recursive=False, bookmarks=True)
        found = self._target_datasets([target], recursive=False)
        tgt = found[0] if found else None
        tgt_snaps = self.dst.list_snapshots([target], recursive=False) if tgt else []
        return src_snaps, tgt, tgt_snaps

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, t.Any]:
        p = self.p
        self._check_features()
        listed = self.src.list_datasets(self.roots, recursive=p.recursive, user_props=('encryption',))
        pairs = select_datasets(listed, self.roots, p.recursive, p.exclude)
        targets = map_targets(pairs, p.target_root, p.target_layout)
        if self.check_mode:
            return self._run_locked(pairs, targets)
        keys = [_lock_key('source', p.source_host, ds.name) for ds, _root in pairs]
        keys += [_lock_key('target', p.target_host, name) for name in targets]
        with locked(keys, lock_dir=p.lock_dir, timeout=p.lock_timeout):
            return self._run_locked(pairs, targets)

    def _run_locked(self, pairs: list[tuple[Dataset, str]], targets: list[str]) -> dict[str, t.Any]:
        p = self.p
        src_by_ds = _group(self.src.list_snapshots(self.roots, recursive=p.recursive, bookmarks=True))
        # the targets of the roots, even of excluded roots, cover every target listed below them
        roots = [target_for(root, root, p.target_root, p.target_layout) for root in self.roots]
        tgt_datasets = {d.name: d for d in self._target_datasets(roots, p.recursive)}
        self._remember(tgt_datasets)
        present = [r for r in roots if r in tgt_datasets]
        tgt_by_ds = _group(self.dst.list_snapshots(present, recursive=p.recursive)) if present else {}

        plans = []
        for (ds, _root), target in zip(pairs, targets):
            plan = self._plan(ds, target, src_by_ds.get(ds.name, []), tgt_datasets.get(target), tgt_by_ds.get(target, []))
            if plan.action == 'resume' and self._token_is_stale(plan):
                plan = self._plan(ds, target, src_by_ds.get(ds.name, []), tgt_datasets.get(target),
                                  tgt_by_ds.get(target, []), stale=True)
            plans.append((ds, plan))
        errors = [plan.error for _ds, plan in plans if plan.error]
        if errors:
            raise ReplicationError('\n'.join(errors), [plan.as_dict() for _ds, plan in plans])
        if any(plan.steps for _ds, plan in plans):
            self._check_tools()

        pending: list[_Done] = []
        since = time.monotonic()
        try:
            for ds, plan in plans:
                item = self._dataset(ds, plan, src_by_ds.get(ds.name, []), tgt_by_ds.get(plan.target, []))
                self.results.append(item.res)
                pending.append(item)
                # batched, but a new base waits at most PROTECT_INTERVAL for its hold, so a pruner
                # running alongside a long run cannot take it before it is protected
                if time.monotonic() - since >= PROTECT_INTERVAL:
                    self._protect(pending)
                    pending, since = [], time.monotonic()
        except (ReplicationError, ZfsCommandError) as exc:
            # what did arrive is protected all the same
            try:
                self._protect(pending)
            except (ReplicationError, ZfsCommandError) as later:
                note = f'protecting the datasets replicated before that failed as well: {later}'
                if isinstance(exc, ReplicationError):
                    exc.msg += f'; {note}'
                    exc.args = (exc.msg,)
                    raise
                raise ReplicationError(f'{exc}; {note}', self.results, exc) from exc
            raise
        self._protect(pending)
        for _ds, plan in plans:
            self.warnings.extend(f'{plan.source}: {note}' for note in plan.notes)
        return {
            'changed': any(r['changed'] for r in self.results),
            'mode': p.mode,
            'transport': (self.dst_t if p.mode == 'push' else self.src_t).kind,
            'source_host': p.source_host,
            'target_host': p.target_host,
            'hold_tag': self.tag,
            'datasets': self.results,
            'warnings': self.warnings,
        }

    # ------------------------------------------------------------------ checks
    def _token_is_stale(self, plan: DatasetPlan) -> bool:
        res = self.src.send_estimate(plan.steps[0].send_args(), False)
        if res.rc == 0:
            return False
        if is_stale_token_error(res.stderr):
            return True
        raise ReplicationError(f'{plan.source}: cannot check the resume token of {plan.target}',
                               error=ZfsCommandError(res.argv, res.rc, res.stdout, res.stderr, stage='send'))

    def _check_tools(self) -> None:
        p = self.p
        comp = p.compression if p.compression != 'none' and p.mode != 'local' else None
        need = {'source': [], 'target': []}
        if comp:
            need['source'].append(comp)
            need['target'].append(comp)
        if p.source_mbuffer:
            need['source'].append('mbuffer')
        if p.mbuffer:
            need['target'].append('mbuffer')
        missing = []
        for side, transport in (('source', self.src_t), ('target', self.dst_t)):
            for tool in dict.fromkeys(need[side]):
                if transport.runner().run(which_argv(tool), check=False).rc != 0:
                    missing.append(f'{tool} on the {side} ({transport.describe()})')
        if missing:
            raise ValidationError(f'missing program(s): {", ".join(missing)}. Install them, or turn them off '
                                  '(mbuffer: false, source_mbuffer: false, compression: none)')
        if p.compression != 'none' and p.mode == 'local':
            self.warnings.append('compression only applies over the network; ignored for a local replication')

    # ------------------------------------------------------------------ one dataset
    def _dataset(self, ds: Dataset, plan: DatasetPlan, src_snaps: list[Snapshot], tgt_snaps: list[Snapshot]) -> _Done:
        res = plan.as_dict()
        # reported as aborted_resume, once it happened (or would, in check mode)
        res.pop('abort_resume')
        res.update({'bytes': 0, 'seconds': 0.0, 'rate': None, 'estimated_bytes': None, 'created_parents': [],
                    'aborted_resume': False, 'held': [], 'released': [], 'bookmarked': None, 'destroyed_bookmarks': [],
                    'pruned': [], 'changed': False})
        if self.check_mode:
            return self._check_dataset(plan, res, src_snaps, tgt_snaps)
        first_action = plan.action
        steps: list[dict[str, t.Any]] = []
        # what ran so far, also when a later step fails
        res['steps'] = steps
        for _attempt in range(MAX_REPLANS):
            if plan.abort_resume:
                self.dst.receive_abort(plan.target)
                res['aborted_resume'] = True
            elif plan.steps:
                self._ensure_parent(plan.target, res)
                for step in plan.steps:
                    steps.append(self._stream(plan, step, res))
                self.known_targets.add(plan.target)
            if not (plan.abort_resume or plan.action == 'resume'):
                break
            src_snaps, tgt, tgt_snaps = self._relist(ds, plan.target)
            plan = self._plan(ds, plan.target, src_snaps, tgt, tgt_snaps)
            if plan.error:
                raise ReplicationError(plan.error, self.results + [res])
            first_action = first_action if first_action != 'none' else plan.action
        else:
            raise ReplicationError(f'{plan.source}: the target still needs work after {MAX_REPLANS} rounds', self.results + [res])
        res.update(plan.as_dict())
        res.pop('abort_resume')
        res['action'] = first_action
        res['steps'] = steps
        if res['seconds']:
            res['rate'] = int(res['bytes'] / res['seconds'])
        return _Done(plan, res, src_snaps, None if steps or res['aborted_resume'] else tgt_snaps)

    def _check_dataset(self, plan: DatasetPlan, res: dict[str, t.Any], src_snaps: list[Snapshot],
                       tgt_snaps: list[Snapshot]) -> _Done:
        total: int | None = 0
        for step, out in zip(plan.steps, res['steps']):
            estimate = self.src.send_estimate(step.send_args(), plan.raw)
            size = parse_send_size(estimate.stdout + '\n' + estimate.stderr) if estimate.rc == 0 else None
            out['estimated_bytes'] = size
            total = None if size is None or total is None else total + size
        res['estimated_bytes'] = total if plan.steps else 0
        res['aborted_resume'] = plan.abort_resume
        if plan.steps:
            self._ensure_parent(plan.target, res)
            self.known_targets.add(plan.target)
        if plan.action == 'resume':
            res['notes'].append('more steps may follow once the interrupted stream is finished')
        return _Done(plan, res, src_snaps, tgt_snaps + self._arrivals(plan, src_snaps, tgt_snaps))

    @staticmethod
    def _arrivals(plan: DatasetPlan, src_snaps: t.Sequence[Snapshot], tgt_snaps: t.Sequence[Snapshot]) -> list[Snapshot]:
        """Target snapshots a check-mode run predicts: the source's, in order after the target's own."""
        by_name = {s.name: s for s in src_snaps if not s.is_bookmark}
        txg = max((s.createtxg for s in tgt_snaps), default=0)
        names = [n for step in plan.steps for n in step.arrives]
        return [dataclasses.replace(by_name[n], dataset=plan.target, createtxg=txg + i + 1, userrefs=0)
                for i, n in enumerate(names) if n in by_name]

    def _ensure_parent(self, target: str, res: dict[str, t.Any]) -> None:
        missing = []
        parent = target.rsplit('/', 1)[0]
        while parent not in self.known_targets and not self.dst.exists(parent):
            if '/' not in parent:
                raise ReplicationError(f'target pool {parent} does not exist', self.results + [res])
            missing.append(parent)
            parent = parent.rsplit('/', 1)[0]
        for name in reversed(missing):
            if not self.check_mode:
                # one at a time: `create -p` ignores -o for the parents it makes, and an
                # unprivileged user on Linux cannot mount them
                self.dst.create_filesystem(name, {'canmount': 'off', 'com.sun:auto-snapshot': 'false'})
            res['created_parents'].append(name)
        self._remember([target.rsplit('/', 1)[0]])

    def _stream(self, plan: DatasetPlan, step: Step, res: dict[str, t.Any]) -> dict[str, t.Any]:
        p = self.p
        remote = p.mode != 'local'
        comp = p.compression if remote and p.compression != 'none' else None
        src_mbuffer = mbuffer_argv(p.mbuffer_size, p.stall_timeout, p.rate_limit) if p.source_mbuffer else None
        dst_mbuffer = mbuffer_argv(p.mbuffer_size, p.stall_timeout, None if p.source_mbuffer else p.rate_limit) if p.mbuffer else None
        send = send_argv(step.send_args(), plan.raw)
        recv = receive_argv(plan.target, filesystem=plan.filesystem, rollback=step.rollback,
                            properties=p.receive_properties, exclude=p.receive_exclude_properties)
        producer = self.src_t.segment(sender_stages(send, mbuffer=src_mbuffer, compression=comp))
        consumer = self.dst_t.segment(receiver_stages(recv, mbuffer=dst_mbuffer, compression=comp))
        timeout = None
        if self.deadline is not None:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise ReplicationError(f'{plan.source}: the run timed out ({p.timeout} s) before {step.to or "resuming"}',
                                       self.results + [res])
        try:
            out = run_pipeline(producer, consumer, timeout=timeout)
        except ZfsCommandError as exc:
            what = f'{step.base} -> {step.to}' if step.base else (step.to or 'resume')
            raise ReplicationError(f'{plan.source} -> {plan.target} ({step.kind} {what}): {exc.stage} failed: '
                                   f'{exc.stderr.strip() or "rc " + str(exc.rc)}', self.results + [res], exc) from exc
        res['bytes'] += out.bytes
        res['seconds'] = round(res['seconds'] + out.seconds, 3)
        done = step.as_dict()
        done.update({'bytes': out.bytes, 'seconds': round(out.seconds, 3)})
        return done

    # ------------------------------------------------------------------ protecting the chain
    def _tagged(self, zfs: Zfs, snaps: t.Iterable[Snapshot]) -> dict[str, list[str]]:
        """Snapshots carrying this target's hold tag, by dataset: one ``zfs holds`` for the whole run."""
        candidates = [s.full_name for s in snaps if not s.is_bookmark and s.held]
        tagged: dict[str, list[str]] = {}
        if candidates:
            for name, tags in zfs.holds(candidates).items():
                if self.tag in tags:
                    tagged.setdefault(name.split('@', 1)[0], []).append(name)
        return tagged

    def _protect(self, done: t.Sequence[_Done]) -> None:
        relist = [d.plan.target for d in done if d.tgt_snaps is None]
        if relist:
            arrived = _group(self.dst.list_snapshots(relist, recursive=False))
            for d in done:
                if d.tgt_snaps is None:
                    d.tgt_snaps = arrived.get(d.plan.target, [])
        items = [(d, d.plan.common_after) for d in done if d.plan.common_after is not None]
        src_tagged = self._tagged(self.src, (s for d, _c in items for s in d.src_snaps if s.dataset == d.plan.source))
        dst_tagged = self._tagged(self.dst, (s for d, _c in items for s in d.tgt_snaps or () if s.dataset == d.plan.target))
        src_hold: list[str] = []
        dst_hold: list[str] = []
        src_release: list[str] = []
        dst_release: list[str] = []
        for d, common in items:
            target_copy = next((s for s in d.tgt_snaps or () if s.guid == common.guid and not s.is_bookmark), None)
            src_keep = common.full_name if not common.is_bookmark else None
            dst_keep = target_copy.full_name if target_copy else None
            hold_s, release_s = plan_holds(self.tag, src_keep, src_tagged.get(d.plan.source, []))
            hold_d, release_d = plan_holds(self.tag, dst_keep, dst_tagged.get(d.plan.target, []))
            d.res['held'] = hold_s + hold_d
            d.res['released'] = release_s + release_d
            src_hold += hold_s
            dst_hold += hold_d
            src_release += release_s
            dst_release += release_d
        if not self.check_mode:
            # every new base is protected on both sides before any old one is let go
            for zfs, names in ((self.src, src_hold), (self.dst, dst_hold)):
                if names:
                    zfs.hold(self.tag, names)
            for zfs, names in ((self.src, src_release), (self.dst, dst_release)):
                if names:
                    zfs.release(self.tag, names)
        for d, common in items:
            self._after_protect(d, common)
        for d in done:
            d.res['changed'] = _changed(d.res)

    def _after_protect(self, d: _Done, common: Snapshot) -> None:
        plan, res = d.plan, d.res
        if self.p.source_bookmark:
            create, destroy = plan_bookmark(plan.source, d.src_snaps, common, self.tag)
            res['bookmarked'] = create[1] if create else None
            res['destroyed_bookmarks'] = destroy
            if not self.check_mode:
                if create:
                    self.src.bookmark(*create)
                for name in destroy:
                    self.src.destroy_bookmark(name)
        if self.p.target_retention:
            doomed = plan_target_prune(d.tgt_snaps or [], self.p.target_retention, self.selection, {common.guid})
            res['pruned'] = [s.full_name for s in doomed]
            if doomed and not self.check_mode:
                for group in self.dst.destroy_batches(plan.target, [s.name for s in doomed]):
                    out = self.dst.destroy_snapshots(plan.target, group)
                    if out.rc != 0:
                        self.warnings.append(f'{plan.target}: pruning failed: {out.stderr.strip()}')


def replicate(params: ReplicateParams | t.Mapping[str, t.Any], *, check_mode: bool = False,
              transport_factory: t.Callable[..., Transport] | None = None) -> dict[str, t.Any]:
    """Replicate per *params*; returns the result dict, raises ValidationError/ReplicationError/ZfsCommandError."""
    p = params if isinstance(params, ReplicateParams) else ReplicateParams.from_mapping(params)
    p.validated()
    factory = transport_factory or make_transport
    src_t = factory(p.source_host, p.transport, p.ssh_options())
    dst_t = factory(p.target_host, p.transport, p.ssh_options())
    with src_t, dst_t:
        return _Run(p, src_t, dst_t, check_mode).run()
