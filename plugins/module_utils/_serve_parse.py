# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a forced-command key may ask for: ``SSH_ORIGINAL_COMMAND`` to a typed request, or :class:`Refused`.

Only the command lines the engine itself sends are accepted. A candidate is
split with :mod:`shlex`, every stage is checked against the shapes below, and
then the request is rendered again with the engine's own builders
(``_transport.remote_command`` / ``remote_script``): anything that does not
come out byte for byte the same (other quoting, extra spaces, a second
command, a newline) is refused. So the parser never has to understand a
shell, only the engine's output.

Nothing here runs anything; ``_serve`` carries the requests out.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing as t

from ._pipeline import COMPRESSORS
from ._transport import RC_MARKER, Stage, remote_command, remote_script
from ._zfs import INERT_PROPERTIES, MAX_ARG_STRLEN, PARENT_PROPERTIES, SERVE_EXCLUDED_PROPERTIES, STAMP_PROPERTY

Mode = t.Literal['receive', 'send']

TAG_PREFIX = 'pyzfsautosnap:'
# characters zfs accepts in a dataset or snapshot name component (zfs_namecheck), and nothing else:
# no shell metacharacters, no look-alikes from outside ASCII
_COMPONENT_RE = re.compile(r'[A-Za-z0-9_.: -]+')
_MAX_NAME = 255
_PROPERTY_RE = re.compile(r'[a-z][a-z0-9_]*|[a-z0-9_.-]+:[A-Za-z0-9_.:-]+')
_TAG_RE = re.compile(re.escape(TAG_PREFIX) + r'[A-Za-z0-9_.:@+/-]{1,200}')
_SIZE_RE = re.compile(r'([1-9][0-9]{0,9})([kKmMgG]?)|([1-9][0-9]?)%')
# what a client may make the server's mbuffer hold: enough for any link, not the server's memory
MAX_MBUFFER_BYTES = 4 << 30
MAX_MBUFFER_PERCENT = 10
_UNITS = {'': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}
_RATE_RE = re.compile(r'[1-9][0-9]{0,9}[kKmMgG]?')
_TOKEN_RE = re.compile(r'[0-9a-f]{1,8}-[0-9a-f]{1,16}-[0-9a-f]{1,16}-[0-9a-f]{2,}')
_LIST_TYPES = frozenset(('filesystem', 'volume', 'snapshot', 'bookmark'))
PROBE_TOOLS = ('mbuffer', 'zstd', 'lz4')
# native properties a client may ask a receive to set (besides user properties); the rest the server sets
CLIENT_PROPERTIES = frozenset(('compression',))
# what the engine's listings are allowed to show and no more; all read-only
_MAX_DEPTH = 1000
# receive: what the engine itself passes, before the endpoint adds what it forces
_ENGINE_RECEIVE_DEFAULTS = {'readonly': 'on', 'com.sun:auto-snapshot': 'false'}


class Refused(Exception):
    """A command this key may not run; the message is the one-line reason."""


# ------------------------------------------------------------------ requests
@dataclasses.dataclass(frozen=True)
class Version:
    """``zfs version``."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """``command -v TOOL``, answered without a shell."""

    tool: str


@dataclasses.dataclass(frozen=True)
class Listing:
    """``zfs list`` of names inside the roots; read-only."""

    args: tuple[str, ...]
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Holds:
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class HoldChange:
    """``zfs hold`` / ``zfs release`` with the engine's own tag."""

    verb: t.Literal['hold', 'release']
    tag: str
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CreateParent:
    name: str
    properties: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Receive:
    """A stream into *target*: the stages before ``zfs receive`` and what the client asked for."""

    target: str
    filesystem: bool
    properties: tuple[tuple[str, str], ...]
    exclude: tuple[str, ...]
    decompress: str | None = None
    mbuffer: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Send:
    """A stream (or with *estimate*, ``-nvP``) of a snapshot inside the roots, or the rest of one (*token*)."""

    send_args: tuple[str, ...]
    raw: bool
    estimate: bool
    snapshot: str | None = None
    token: str | None = None
    compress: str | None = None
    mbuffer: tuple[str, ...] | None = None


Request = t.Union[Version, Probe, Listing, Holds, HoldChange, CreateParent, Receive, Send]


# ------------------------------------------------------------------ names
def check_name(name: str, what: str = 'dataset') -> str:
    """A dataset name (or snapshot, with *what* 'snapshot') made only of zfs' own characters."""
    if not name or len(name) > _MAX_NAME:
        raise Refused(f'{what} name of {len(name)} characters')
    dataset, sep, snap = name.partition('@')
    if what == 'snapshot' and (not sep or not snap):
        raise Refused(f'{name!r} is not a snapshot')
    if what == 'dataset' and sep:
        raise Refused(f'{name!r} is not a dataset')
    parts = dataset.split('/') + ([snap] if sep else [])
    for part in parts:
        if part in ('', '.', '..') or not _COMPONENT_RE.fullmatch(part) or part != part.strip():
            raise Refused(f'{name!r} is not a valid {what} name')
    return name


def inside(name: str, roots: t.Sequence[str]) -> bool:
    dataset = name.split('@', 1)[0].split('#', 1)[0]
    return any(dataset == root or dataset.startswith(root + '/') for root in roots)


def _confined(name: str, roots: t.Sequence[str], what: str) -> str:
    check_name(name, what)
    if not inside(name, roots):
        raise Refused(f'{name} is outside {", ".join(roots)}')
    return name


def _names(args: t.Sequence[str], roots: t.Sequence[str], what: str) -> tuple[str, ...]:
    if not args:
        # `zfs list` without a name lists every pool: an empty value never means everything
        raise Refused('no dataset named')
    return tuple(_confined(a, roots, what) for a in args)


# ------------------------------------------------------------------ single commands
def _listing(args: list[str], roots: t.Sequence[str]) -> Listing:
    i = 0
    seen: set[str] = set()
    while i < len(args) and args[i].startswith('-'):
        opt = args[i]
        if opt in seen:
            raise Refused(f'zfs list {opt} given twice')
        seen.add(opt)
        if opt in ('-H', '-p', '-r'):
            i += 1
            continue
        if opt not in ('-t', '-o', '-d') or i + 1 >= len(args):
            raise Refused(f'zfs list option {opt!r} is not allowed')
        value = args[i + 1]
        if opt == '-t' and not set(value.split(',')) <= _LIST_TYPES:
            raise Refused(f'zfs list -t {value!r} is not allowed')
        if opt == '-o' and not all(_PROPERTY_RE.fullmatch(col) for col in value.split(',')):
            raise Refused(f'zfs list -o {value!r} is not allowed')
        if opt == '-d' and not (value.isdigit() and value.isascii() and int(value) <= _MAX_DEPTH):
            raise Refused(f'zfs list -d {value!r} is not allowed')
        i += 2
    if '-r' in seen and '-d' in seen:
        raise Refused('zfs list -r with -d')
    names = _names(args[i:], roots, 'dataset')
    return Listing(tuple(args[:i]), names)


def _hold_change(verb: str, args: list[str], roots: t.Sequence[str]) -> HoldChange:
    if len(args) < 2 or not _TAG_RE.fullmatch(args[0]):
        raise Refused(f'zfs {verb} needs the tag {TAG_PREFIX}… and snapshots')
    return HoldChange(t.cast(t.Literal['hold', 'release'], verb), args[0], _names(args[1:], roots, 'snapshot'))


def _create(args: list[str], roots: t.Sequence[str]) -> CreateParent:
    expected = [arg for key, value in PARENT_PROPERTIES.items() for arg in ('-o', f'{key}={value}')]
    if args[:-1] != expected or not args:
        raise Refused('zfs create is only allowed for the parents the engine creates')
    name = _confined(args[-1], roots, 'dataset')
    if name in roots:
        raise Refused(f'{name} is a root; it is created by the administrator')
    return CreateParent(name, tuple(PARENT_PROPERTIES.items()))


def _receive(args: list[str], roots: t.Sequence[str]) -> Receive:
    if args[:1] == ['-A']:
        raise Refused('discarding a resumable receive (zfs receive -A) is for the backup server to decide; '
                      'an administrator runs it there')
    if args[:2] != ['-s', '-u']:
        raise Refused('zfs receive must be resumable and unmounted (-s -u)')
    i = 2
    props: dict[str, str] = {}
    exclude: list[str] = []
    while i < len(args) - 1:
        opt = args[i]
        if opt == '-F':
            raise Refused('zfs receive -F would roll back or destroy on the target')
        if opt not in ('-o', '-x'):
            raise Refused(f'zfs receive option {opt!r} is not allowed')
        value = args[i + 1]
        if opt == '-o':
            key, sep, val = value.partition('=')
            if not sep or not _PROPERTY_RE.fullmatch(key) or key in props:
                raise Refused(f'zfs receive -o {value!r} is not allowed')
            props[key] = val
        else:
            if not _PROPERTY_RE.fullmatch(value):
                raise Refused(f'zfs receive -x {value!r} is not allowed')
            exclude.append(value)
        i += 2
    if i != len(args) - 1:
        raise Refused('zfs receive needs exactly one target after its options')
    target = _confined(args[-1], roots, 'dataset')
    if target in roots:
        raise Refused(f'{target} is a root: streams are received below it')
    for key, value in _ENGINE_RECEIVE_DEFAULTS.items():
        if props.pop(key, None) != value:
            raise Refused(f'zfs receive must set {key}={value}')
    # the engine leaves canmount out for volumes, which have none; whatever the stream really holds,
    # the endpoint leaves no filesystem mountable (see _serve)
    canmount = props.pop('canmount', None)
    if canmount not in (None, 'noauto'):
        raise Refused('property canmount is set by the backup server, not by a client')
    filesystem = canmount == 'noauto'
    forced = set(INERT_PROPERTIES) | set(SERVE_EXCLUDED_PROPERTIES) | {STAMP_PROPERTY}
    for key in [*props, *exclude]:
        if key in forced or key.startswith(TAG_PREFIX):
            raise Refused(f'property {key} is set by the backup server, not by a client')
    for key in props:
        # anything else (encryption keys read from files, dedup, copies, quotas) is the server's to set
        if ':' not in key and key not in CLIENT_PROPERTIES:
            raise Refused(f'property {key} is set by the backup server, not by a client')
    return Receive(target, filesystem, tuple(props.items()), tuple(exclude))


def _send(args: list[str], roots: t.Sequence[str]) -> Send:
    estimate = args[:3] == ['-n', '-v', '-P']
    rest = args[3:] if estimate else args
    if rest[:1] == ['-t']:
        if len(rest) != 2 or not _TOKEN_RE.fullmatch(rest[1]):
            raise Refused('zfs send -t needs one resume token')
        # what the token continues is checked by the endpoint, which asks zfs to decode it
        return Send(tuple(rest), False, estimate, token=rest[1])
    raw = rest[:1] == ['-w']
    if raw:
        rest = rest[1:]
    elif rest[:3] == ['-L', '-e', '-c']:
        rest = rest[3:]
    else:
        raise Refused('zfs send must be raw (-w) or -L -e -c')
    if len(rest) == 3 and rest[0] in ('-i', '-I'):
        base = rest[1]
        # a base is a snapshot or (with -i) a bookmark
        check_name(base.replace('#', '@', 1) if rest[0] == '-i' else base, 'snapshot')
        if not inside(base, roots):
            raise Refused(f'{base} is outside {", ".join(roots)}')
    elif len(rest) != 1:
        raise Refused('zfs send takes one snapshot, optionally after -i/-I BASE')
    return Send(tuple(rest), raw, estimate, snapshot=_confined(rest[-1], roots, 'snapshot'))


def _single(argv: list[str], roots: t.Sequence[str], mode: Mode) -> Request:
    if argv[:3] == ['sh', '-c', 'command -v "$1"'] and len(argv) == 5 and argv[3] == 'sh':
        if argv[4] not in PROBE_TOOLS:
            raise Refused(f'probing for {argv[4]!r} is not allowed')
        return Probe(argv[4])
    if not argv or argv[0] != 'zfs' or len(argv) < 2:
        raise Refused(f'{argv[0] if argv else "an empty command"} is not a command this key may run')
    verb, args = argv[1], argv[2:]
    if verb == 'version' and not args:
        return Version()
    if verb == 'list':
        return _listing(args, roots)
    if verb == 'holds' and args[:1] == ['-H']:
        return Holds(_names(args[1:], roots, 'snapshot'))
    if verb in ('hold', 'release'):
        return _hold_change(verb, args, roots)
    if mode == 'receive' and verb == 'create':
        return _create(args, roots)
    if mode == 'receive' and verb == 'receive':
        return _receive(args, roots)
    if mode == 'send' and verb == 'send':
        return _send(args, roots)
    raise Refused(f'zfs {verb} is not allowed{" on a backup target" if mode == "receive" else ""}')


# ------------------------------------------------------------------ pipelines
def _mbuffer(argv: list[str]) -> tuple[str, ...]:
    if argv[:6:2] != ['mbuffer', '-s', '-m'] or argv[1] != '-q' or argv[3] != '128k' or len(argv) < 6:
        raise Refused('mbuffer is only allowed as the engine runs it')
    size = _SIZE_RE.fullmatch(argv[5])
    if not size or (size.group(3) and int(size.group(3)) > MAX_MBUFFER_PERCENT) or (
            size.group(1) and int(size.group(1)) * _UNITS[size.group(2).lower()] > MAX_MBUFFER_BYTES):
        raise Refused(f'mbuffer -m {argv[5]!r} is not allowed (at most 4G or {MAX_MBUFFER_PERCENT}% on a backup server)')
    rest = argv[6:]
    if rest[:1] == ['-W']:
        if len(rest) < 2 or not (rest[1].isdigit() and rest[1].isascii() and 0 < int(rest[1]) < 10 ** 6):
            raise Refused('mbuffer -W needs seconds')
        rest = rest[2:]
    if rest[:1] == ['-r']:
        if len(rest) < 2 or not _RATE_RE.fullmatch(rest[1]):
            raise Refused('mbuffer -r needs a rate')
        rest = rest[2:]
    if rest:
        raise Refused(f'mbuffer option {rest[0]!r} is not allowed')
    return tuple(argv)


def _tokens(script: str) -> list[list[str]]:
    """The stages of a script the engine's ``remote_script`` wrote, each one's argv."""
    prefix = 'LC_ALL=C; export LC_ALL; '
    if not script.startswith(prefix):
        raise Refused('not a pipeline of the engine')
    try:
        lexer = shlex.shlex(script[len(prefix):], posix=True, punctuation_chars='|;{}')
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as exc:
        raise Refused(f'cannot split the pipeline: {exc}') from None
    stages: list[list[str]] = [[]]
    for word in tokens:
        if word == '|':
            stages.append([])
        else:
            stages[-1].append(word)
    out = []
    for index, words in enumerate(stages):
        if index < len(stages) - 1:
            # every stage but the last reports its exit status, as remote_script writes it
            tail = [';', 'echo', f'{RC_MARKER} {index} $?', '>&2', ';', '}']
            if words[:1] != ['{'] or words[-len(tail):] != tail:
                raise Refused('not a pipeline of the engine')
            out.append(words[1:-len(tail)])
        else:
            out.append(words)
    return out


def _pipeline(stages: list[list[str]], roots: t.Sequence[str], mode: Mode) -> Request:
    names = [s[0] if s else '' for s in stages]
    if mode == 'receive':
        *front, last = stages
        request = _single(last, roots, mode)
        if not isinstance(request, Receive):
            raise Refused('a pipeline must end in zfs receive')
        decompress = None
        if front and front[0][:1] in (['zstd'], ['lz4']):
            decompress = front.pop(0)[0]
            if tuple(stages[0]) != COMPRESSORS[decompress][1]:
                raise Refused(f'{decompress} is only allowed to decompress')
        mbuffer = _mbuffer(front.pop(0)) if front else None
        if front:
            raise Refused(f'pipeline stages {", ".join(names)} are not allowed')
        return dataclasses.replace(request, decompress=decompress, mbuffer=mbuffer)
    first, *back = stages
    request = _single(first, roots, mode)
    if not isinstance(request, Send) or request.estimate:
        raise Refused('a pipeline must start with zfs send')
    mbuffer = _mbuffer(back.pop(0)) if back and back[0][:1] == ['mbuffer'] else None
    compress = None
    if back and back[0][:1] in (['zstd'], ['lz4']):
        compress = back[0][0]
        if tuple(back.pop(0)) != COMPRESSORS[compress][0]:
            raise Refused(f'{compress} is only allowed to compress')
    if back:
        raise Refused(f'pipeline stages {", ".join(names)} are not allowed')
    return dataclasses.replace(request, compress=compress, mbuffer=mbuffer)


# ------------------------------------------------------------------ entry
def parse(command: str | None, roots: t.Sequence[str], mode: Mode = 'receive') -> tuple[Request, list[str] | list[list[str]]]:
    """The request *command* asks for, and the argv (or, for a pipeline, each stage's argv) it was made of.

    Raises :class:`Refused` for anything but a command line the engine itself would have sent.
    """
    if command is None:
        raise Refused('an interactive login is not allowed; this key runs a forced command')
    if not command:
        raise Refused('an empty command')
    if len(command.encode('utf-8', 'surrogateescape')) > MAX_ARG_STRLEN or '\0' in command:
        raise Refused('the command is too long or holds a NUL')
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise Refused(f'cannot split the command: {exc}') from None
    request: Request
    if argv[:2] == ['env', 'LC_ALL=C']:
        inner = argv[2:]
        request = _single(inner, roots, mode)
        rendered = remote_command(inner)
        parts: list[str] | list[list[str]] = inner
    elif argv[:2] == ['sh', '-c'] and len(argv) == 3:
        stages = _tokens(argv[2])
        if len(stages) < 2:
            raise Refused('not a pipeline of the engine')
        request = _pipeline(stages, roots, mode)
        rendered = remote_script([Stage(str(i), tuple(s)) for i, s in enumerate(stages)])
        parts = stages
    else:
        raise Refused(f'{argv[0] if argv else "an empty command"} is not a command this key may run')
    if rendered != command:
        raise Refused('not quoted the way the engine quotes its commands')
    return request, parts


def describe(command: str | None, limit: int = 400) -> str:
    """*command* for a log line: printable ASCII only, quoted, cut to *limit* characters."""
    if command is None:
        return '(none)'
    shown = command.encode('ascii', 'backslashreplace').decode('ascii')
    shown = ''.join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    if len(shown) > limit:
        shown = shown[:limit] + '…'
    return shlex.quote(shown)


__all__ = ['Refused', 'Request', 'check_name', 'describe', 'inside', 'parse']
