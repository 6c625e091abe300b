# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Command line entry point for hosts without Ansible (systemd timers, cron).

Run as ``python3 -m <package>._cli autosnap --root tank --policy daily=7`` or
``python3 -m <package>._cli replicate tank/data --target-root zfsbackups/host``
where <package> is this directory, installed or copied anywhere: only
relative imports are used.

``--args-file FILE [OPTION...]`` reads the arguments from FILE, a JSON list of
strings, and appends the OPTIONs given after it (e.g. ``--check``). The systemd
units use it: dataset names and patterns reach the engine verbatim, with no
shell or unit-file quoting in between.

Exit status: 0 done, 1 a zfs command failed, 2 bad input, 3 lock timeout,
128+N stopped by signal N (143 SIGTERM, 130 SIGINT, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing as t

from ._autosnap import autosnap
from ._lock import DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT, LockTimeout
from ._replicate import cli_replicate
from ._signals import exit_status, interrupted_result, interrupted_signal, interrupts_raise
from ._naming import DEFAULT_FREQUENT_MINUTES, DEFAULT_PREFIX, DEFAULT_SEPARATOR, LABELS
from ._types import Interrupted, ValidationError, ZfsCommandError
from ._zfs import LocalRunner

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


def _policy_item(text: str) -> tuple[str, str]:
    label, sep, keep = text.partition('=')
    if not sep or not label or not keep:
        raise argparse.ArgumentTypeError(f'expected LABEL=KEEP (e.g. daily=7), got {text!r}')
    return label.strip(), keep.strip()


def _add_autosnap(sub: t.Any) -> None:
    p = sub.add_parser('autosnap', help='take due snapshots and prune old ones',
                       description='Take due zfs-auto-snapshot style snapshots and prune by retention policy.')
    p.add_argument('--root', dest='roots', action='append', default=[], metavar='DATASET',
                   help='dataset to consider (repeatable); default: every imported pool')
    p.add_argument('--no-recursive', dest='recursive', action='store_false', help='only the roots, not their descendants')
    p.add_argument('--exclude', action='append', default=[], metavar='PATTERN', help='fnmatch pattern of dataset names to skip')
    p.add_argument('--policy', action='append', type=_policy_item, default=[], metavar='LABEL=KEEP',
                   help=f'label and how many to keep (repeatable); labels: {", ".join(LABELS)}')
    p.add_argument('--label', choices=LABELS, help='single label (with --keep), instead of --policy')
    p.add_argument('--keep', help='how many snapshots of --label to keep')
    p.add_argument('--prefix', default=DEFAULT_PREFIX)
    p.add_argument('--sep', dest='separator', default=DEFAULT_SEPARATOR)
    p.add_argument('--frequent-minutes', type=int, default=DEFAULT_FREQUENT_MINUTES)
    p.add_argument('--default-exclude', action='store_true', help='only datasets with com.sun:auto-snapshot[:label]=true')
    p.add_argument('--skip-unchanged', action='store_true', help='no new snapshot where nothing was written since the last')
    p.add_argument('--no-prune', dest='prune', action='store_false')
    p.add_argument('--destroy-only', dest='snapshot', action='store_false', help='prune without taking snapshots')
    p.add_argument('--lock-dir', default=DEFAULT_LOCK_DIR)
    p.add_argument('--lock-timeout', type=float, default=DEFAULT_LOCK_TIMEOUT)
    p.add_argument('--zfs-path', default='zfs')
    p.add_argument('--check', action='store_true', help='report the plan, change nothing')
    p.add_argument('--diff', action='store_true', help='include before/after lists of managed snapshots')
    p.add_argument('--json', action='store_true', help='print the full result as JSON')
    p.set_defaults(func=_run_autosnap)


def _run_autosnap(args: argparse.Namespace) -> tuple[int, dict[str, t.Any]]:
    result = autosnap(
        LocalRunner(), check_mode=args.check, diff=args.diff, zfs_path=args.zfs_path,
        lock_dir=args.lock_dir, lock_timeout=args.lock_timeout,
        roots=args.roots, recursive=args.recursive, exclude=args.exclude,
        label=args.label, keep=args.keep, policy=dict(args.policy) or None,
        prefix=args.prefix, separator=args.separator, frequent_minutes=args.frequent_minutes,
        default_exclude=args.default_exclude, skip_unchanged=args.skip_unchanged,
        prune=args.prune, snapshot=args.snapshot)
    return (EXIT_FAILED if result.get('failed') else EXIT_OK), result


def _add_replicate(sub: t.Any) -> None:
    # the replication options live with the engine; this only routes to them
    p = sub.add_parser('replicate', help='replicate snapshots to a backup target (see: replicate --help)', add_help=False)
    p.add_argument('args', nargs=argparse.REMAINDER)
    p.set_defaults(func=_run_replicate, json=True)


def _run_replicate(args: argparse.Namespace) -> tuple[int, dict[str, t.Any]]:
    result = cli_replicate(args.args)
    return (EXIT_FAILED if result.get('failed') else EXIT_OK), result


def _summary(result: dict[str, t.Any], out: t.TextIO) -> None:
    verb = 'would ' if result.get('check_mode') else ''
    for name in result.get('created', []):
        out.write(f'{verb}create {name}\n')
    for name in result.get('destroyed', []):
        out.write(f'{verb}destroy {name}\n')
    for item in result.get('skipped', []):
        out.write(f'skip {item["name"]}: {item["reason"]}\n')
    if 'diff' in result:
        out.write('--- before\n' + result['diff']['before'] + '+++ after\n' + result['diff']['after'])
    out.write(f'{len(result.get("created", []))} created, {len(result.get("destroyed", []))} destroyed, '
              f'changed={str(result.get("changed", False)).lower()}\n')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='pyzfsautosnap', description='Automatic ZFS snapshots.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    _add_autosnap(sub)
    _add_replicate(sub)
    return parser


def read_args_file(argv: list[str]) -> list[str]:
    """Expand a leading ``--args-file FILE`` into the JSON list of strings stored in FILE."""
    if argv[:1] != ['--args-file']:
        return argv
    if len(argv) < 2:
        raise ValidationError('--args-file needs a file name')
    try:
        with open(argv[1], encoding='utf-8') as fh:
            stored = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValidationError(f'cannot read arguments from {argv[1]}: {exc}') from None
    if not isinstance(stored, list) or not all(isinstance(arg, str) for arg in stored):
        raise ValidationError(f'{argv[1]} must hold a JSON list of strings')
    if stored[:1] == ['--args-file']:
        raise ValidationError(f'{argv[1]} must not name another --args-file')
    return stored + argv[2:]


def main(argv: t.Sequence[str] | None = None, stdout: t.TextIO | None = None, stderr: t.TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        argv = read_args_file(list(sys.argv[1:] if argv is None else argv))
    except ValidationError as exc:
        stderr.write(f'error: {exc}\n')
        return EXIT_USAGE
    if argv[:1] == ['replicate']:
        # argparse would take the replication options (and --help) for ours
        args = argparse.Namespace(func=_run_replicate, args=argv[1:], json=True, check='--check' in argv)
    else:
        args = build_parser().parse_args(argv)
    try:
        with interrupts_raise():
            code, result = args.func(args)
    except Interrupted as exc:
        code, result = EXIT_FAILED, interrupted_result(exc.signum, getattr(exc, 'dataset', None))
    except ValidationError as exc:
        code, result = EXIT_USAGE, {'failed': True, 'msg': str(exc)}
    except LockTimeout as exc:
        code, result = EXIT_LOCKED, {'failed': True, 'msg': str(exc)}
    except ZfsCommandError as exc:
        code, result = EXIT_FAILED, {'failed': True, 'msg': str(exc), **exc.as_dict()}
    result['check_mode'] = bool(getattr(args, 'check', False))
    signum = interrupted_signal(result)
    if signum is not None:
        code = exit_status(signum)
        result['failed'] = True
        result.setdefault('msg', interrupted_result(signum)['msg'])
    if getattr(args, 'json', False):
        if signum is not None:
            stderr.write(f'error: {result["msg"]}\n')
        json.dump(result, stdout, indent=2, sort_keys=True)
        stdout.write('\n')
    else:
        for warning in result.get('warnings', []):
            stderr.write(f'warning: {warning}\n')
        if result.get('failed'):
            stderr.write(f'error: {result["msg"]}\n')
        if 'created' in result:
            _summary(result, stdout)
    return code


if __name__ == '__main__':
    raise SystemExit(main())
