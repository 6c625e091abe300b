# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Command line entry point for hosts without Ansible (systemd timers, cron).

Run as ``python3 -m <package>._cli autosnap --root tank --policy daily=7`` or
``python3 -m <package>._cli replicate tank/data --target-root zfsbackups/host``
or, as the forced command of a replication key, ``… serve --root zfsbackups/host``,
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

from ._lock import LockTimeout
from ._options import Schema, add_arguments, from_namespace
from ._signals import exit_status, interrupted_result, interrupted_signal, interrupts_raise
from ._types import Interrupted, ValidationError, ZfsCommandError
from ._zfs import LocalRunner, Zfs

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
# The subcommands and their summaries. Only the subcommand that runs has its options (and their modules)
# loaded: sshd starts `serve` for every command a client sends, and a receive user cannot write bytecode.
COMMANDS = {
    'autosnap': 'take due snapshots and prune old ones',
    'replicate': 'replicate snapshots to a backup target',
    'retain': "prune a backup server's replicas by their arrival on it",
    'serve': 'forced command of a replication key (authorized_keys command=...)',
}


def _add_engine(sub: t.Any, schema: Schema, func: t.Callable[..., t.Any], *, diff: bool = False) -> None:
    """A subcommand that changes pools: its schema's options, --check and --json (and --diff)."""
    p = sub.add_parser(schema.name, help=COMMANDS[schema.name], description=schema.help)
    add_arguments(p, schema)
    p.add_argument('--check', action='store_true', help='report the plan, change nothing')
    if diff:
        p.add_argument('--diff', action='store_true', help='include before/after lists of managed snapshots')
    p.add_argument('--json', action='store_true', help='print the full result as JSON')
    p.set_defaults(func=func)


def _add_autosnap(sub: t.Any) -> None:
    from . import _autosnap_options  # noqa: PLC0415
    _add_engine(sub, _autosnap_options.SCHEMA, _run_autosnap, diff=True)


# The engines are imported when their subcommand runs: `serve`, started by sshd for every command a
# client sends, must not pay for the replication engine and paramiko each time.
def _run_autosnap(args: argparse.Namespace) -> tuple[int, dict[str, t.Any]]:
    from . import _autosnap_options  # noqa: PLC0415
    from ._autosnap import run_autosnap  # noqa: PLC0415
    values = _autosnap_options.normalise(from_namespace(_autosnap_options.SCHEMA, args))
    result = run_autosnap(
        _autosnap_options.to_config(values), LocalRunner(), check_mode=args.check, diff=args.diff,
        zfs_path=values['zfs_path'], lock_dir=values['lock_dir'], lock_timeout=values['lock_timeout'])
    return (EXIT_FAILED if result.get('failed') else EXIT_OK), result


def _add_replicate(sub: t.Any) -> None:
    from . import _replicate_options  # noqa: PLC0415
    p = sub.add_parser('replicate', help=COMMANDS['replicate'], description=_replicate_options.SCHEMA.help)
    _replicate_options.build_parser(parser=p)
    p.set_defaults(func=_run_replicate, json=True)


def _run_replicate(args: argparse.Namespace) -> tuple[int, dict[str, t.Any]]:
    from . import _replicate_options  # noqa: PLC0415
    from ._replicate import run_replicate  # noqa: PLC0415
    raw = from_namespace(_replicate_options.SCHEMA, args)
    # bad input exits with EXIT_USAGE like autosnap's, before any host is contacted
    _replicate_options.normalise(raw)
    result = run_replicate(raw, check_mode=args.check)
    return (EXIT_FAILED if result.get('failed') else EXIT_OK), result


def cli_replicate(argv: t.Sequence[str]) -> dict[str, t.Any]:
    """Parse replicate's *argv* and replicate; returns the result, or ``failed: true`` with ``msg`` and details."""
    from . import _replicate_options  # noqa: PLC0415
    from ._replicate import run_replicate  # noqa: PLC0415
    namespace = _replicate_options.build_parser().parse_args(list(argv))
    return run_replicate(from_namespace(_replicate_options.SCHEMA, namespace), check_mode=namespace.check)


def _add_retain(sub: t.Any) -> None:
    from . import _retain_options  # noqa: PLC0415
    _add_engine(sub, _retain_options.SCHEMA, _run_retain)


def _run_retain(args: argparse.Namespace) -> tuple[int, dict[str, t.Any]]:
    from . import _retain_options  # noqa: PLC0415
    from ._retain import run_retain  # noqa: PLC0415
    values = _retain_options.normalise(from_namespace(_retain_options.SCHEMA, args))
    result = run_retain(values, Zfs(LocalRunner(), values['zfs_path']), check_mode=args.check)
    return (EXIT_FAILED if result.get('failed') else EXIT_OK), result


def _add_serve(sub: t.Any) -> None:
    from . import _serve_options  # noqa: PLC0415
    p = sub.add_parser('serve', help=COMMANDS['serve'], description=_serve_options.SCHEMA.help)
    add_arguments(p, _serve_options.SCHEMA)


def _serve(args: argparse.Namespace, stderr: t.TextIO) -> int:
    from . import _serve_options  # noqa: PLC0415
    from ._serve import serve  # noqa: PLC0415
    # stdout is the stream itself here: nothing but the requested command's output may reach it
    try:
        values = _serve_options.normalise(from_namespace(_serve_options.SCHEMA, args))
    except ValidationError as exc:
        stderr.write(f'pyzfsautosnap serve: error: {exc}\n')
        return EXIT_USAGE
    try:
        with interrupts_raise():
            return serve(values['roots'], send=values['send'], zfs_path=values['zfs_path'], stderr=stderr)
    except Interrupted as exc:
        return exit_status(exc.signum)


def _summary(result: dict[str, t.Any], out: t.TextIO) -> None:
    """What autosnap or retain did (or would do), a line per snapshot, and the counts."""
    verb = 'would ' if result.get('check_mode') else ''
    for name in result.get('created', []):
        out.write(f'{verb}create {name}\n')
    for name in result.get('destroyed', []):
        out.write(f'{verb}destroy {name}\n')
    for item in result.get('skipped', []):
        out.write(f'skip {item["name"]}: {item["reason"]}\n')
    if 'diff' in result:
        out.write('--- before\n' + result['diff']['before'] + '+++ after\n' + result['diff']['after'])
    words = (('created', 'created'), ('destroyed', 'destroyed'), ('stamped', 'stamped as arriving now'))
    counts = [f'{len(result[key])} {word}' for key, word in words if key in result]
    out.write(', '.join([*counts, f'changed={str(result.get("changed", False)).lower()}']) + '\n')


_ADDERS: dict[str, t.Callable[[t.Any], None]] = {
    'autosnap': _add_autosnap, 'replicate': _add_replicate, 'retain': _add_retain, 'serve': _add_serve}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or with only *command*'s options (the others are listed by name)."""
    parser = argparse.ArgumentParser(prog='pyzfsautosnap', description='Automatic ZFS snapshots.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, summary in COMMANDS.items():
        if command in (None, name):
            _ADDERS[name](sub)
        else:
            sub.add_parser(name, help=summary)
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
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    if args.command == 'serve':
        return _serve(args, stderr)
    try:
        with interrupts_raise():
            code, result = args.func(args)
    except Interrupted as exc:
        code, result = EXIT_FAILED, interrupted_result(exc.signum, exc.dataset)
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
        if 'created' in result or 'stamped' in result:
            _summary(result, stdout)
    return int(code)


if __name__ == '__main__':
    raise SystemExit(main())
