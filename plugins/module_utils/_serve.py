# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``serve``: the forced command of a replication key, so a client's key can add snapshots and nothing else.

sshd runs it instead of whatever the key's holder asked for and leaves that
in ``SSH_ORIGINAL_COMMAND``. ``_serve_parse`` turns it into a request (or a
refusal); this module carries the request out without a shell:

- listings, ``zfs holds`` and ``zfs version`` as asked, inside the roots;
- ``zfs hold``/``release`` with the engine's tag only, ``zfs create`` of parents;
- a receive as a pipeline of local processes (decompressor, mbuffer,
  ``zfs receive``) with every inert property forced and never ``-F``; after it,
  each snapshot that arrived is stamped with the server's clock
  (``pyzfsautosnap:received``) and any filesystem the stream left mountable
  is made ``canmount=noauto``;
- in sending mode (a pull), sends of snapshots inside the roots.

The stderr of a pipeline carries the same exit-status markers the engine's
``sh -c`` pipeline prints, so the client cannot tell the difference.

A refusal exits with 1 and one line on stderr and in syslog (the journal),
the command quoted and cut. Nothing destructive is ever run here: the
server's own timer decides what to destroy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import syslog
import time
import typing as t

from ._serve_parse import (
    CreateParent, HoldChange, Holds, Listing, Mode, Probe, Receive, Refused, Request, Send, Version, describe, inside,
    parse,
)
from ._pipeline import COMPRESSORS
from ._signals import deferred, die_with_parent
from ._transport import RC_MARKER
from ._types import ZfsCommandError
from ._zfs_parse import token_toname
from ._zfs import STAMP_PROPERTY, CommandResult, LocalRunner, Zfs, inert_receive_argv, send_argv

EXIT_REFUSED = 1
_KILL_GRACE = 5.0


class Log(t.Protocol):
    def __call__(self, priority: int, message: str) -> None:
        ...


def syslog_log(priority: int, message: str) -> None:
    syslog.openlog('pyzfsautosnap-serve', syslog.LOG_PID, syslog.LOG_AUTH)
    syslog.syslog(priority, message)


class Server:
    """Carries out the requests of one key, confined to *roots*."""

    def __init__(self, roots: t.Sequence[str], mode: Mode = 'receive', *, zfs: Zfs | None = None,
                 log: Log = syslog_log, stdin: int = 0, stdout: int = 1, stderr: t.TextIO | None = None,
                 clock: t.Callable[[], float] = time.time) -> None:
        self.roots = tuple(roots)
        self.mode = mode
        self.zfs = zfs or Zfs(LocalRunner())
        self.log = log
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr or sys.stderr
        self.clock = clock
        self.env = dict(os.environ, LC_ALL='C')

    # ------------------------------------------------------------ entry
    def handle(self, command: str | None) -> int:
        try:
            request, _parts = parse(command, self.roots, self.mode)
            return self.run(request)
        except Refused as exc:
            return self.refuse(str(exc), command)

    def refuse(self, reason: str, command: str | None) -> int:
        line = f'refused: {reason}: {describe(command)}'
        self.log(syslog.LOG_WARNING, line)
        self.stderr.write(f'pyzfsautosnap serve: {line}\n')
        self.stderr.flush()
        return EXIT_REFUSED

    def _passed(self, res: CommandResult) -> int:
        """Hand *res* back as if the client had run the command itself."""
        if res.stdout:
            os.write(self.stdout, res.stdout.encode('utf-8', 'surrogateescape'))
        if res.stderr:
            self.stderr.write(res.stderr)
            self.stderr.flush()
        return res.rc

    def run(self, request: Request) -> int:
        zfs = self.zfs
        if isinstance(request, Version):
            return self._passed(zfs.version_result())
        if isinstance(request, Probe):
            path = shutil.which(request.tool, path=self.env.get('PATH'))
            if path:
                os.write(self.stdout, f'{path}\n'.encode())
            return 0 if path else 1
        if isinstance(request, Listing):
            return self._passed(zfs.list_result(request.args, request.names))
        if isinstance(request, Holds):
            return self._passed(zfs.holds_result(request.names))
        if isinstance(request, HoldChange):
            return self._passed(zfs.hold_result(request.verb, request.tag, request.names))
        if isinstance(request, CreateParent):
            return self._passed(zfs.create_result(request.name, dict(request.properties)))
        if isinstance(request, Receive):
            return self.receive(request)
        return self.send(request)

    # ------------------------------------------------------------ streams
    def receive(self, request: Receive) -> int:
        try:
            before = self._stamps(request.target)
        except ZfsCommandError as exc:
            return self._failed(f'cannot list {request.target} before receiving into it', exc)
        stages: list[tuple[str, ...]] = []
        if request.decompress:
            stages.append(COMPRESSORS[request.decompress][1])
        if request.mbuffer:
            stages.append(request.mbuffer)
        stages.append(inert_receive_argv(request.target, filesystem=request.filesystem,
                                         properties=dict(request.properties), exclude=request.exclude,
                                         zfs=self.zfs.zfs))
        rc = self._pipeline(stages)
        self.log(syslog.LOG_INFO, f'receive into {request.target}: rc {rc}')
        if rc != 0:
            return rc
        try:
            self._settle(request.target, before)
        except ZfsCommandError as exc:
            return self._failed(f'received into {request.target}, but could not stamp or settle it', exc)
        return 0

    def _stamps(self, target: str) -> dict[str, str]:
        """The arrival stamp of every snapshot under *target* now ('-' where there is none)."""
        tree = self.zfs.received_tree(target)
        return {row[0]: row[4] for row in tree or () if row[1] == 'snapshot'}

    def _settle(self, target: str, before: t.Mapping[str, str]) -> None:
        """Stamp what arrived with this server's clock; leave nothing mountable or writable, no stamp altered."""
        tree = self.zfs.received_tree(target) or []
        arrived = [name for name, kind, _cm, _ro, _st in tree if kind == 'snapshot' and name not in before]
        # a replication stream (send -R) brings children, which -o does not reach, and snapshot properties,
        # which could back-date the arrival of snapshots that were here before it
        mountable = [name for name, kind, canmount, _ro, _st in tree if kind == 'filesystem' and canmount == 'on']
        writable = [name for name, kind, _cm, readonly, _st in tree if kind != 'snapshot' and readonly == 'off']
        altered: dict[str, list[str]] = {}
        for name, kind, _cm, _ro, stamp in tree:
            if kind == 'snapshot' and name in before and stamp != before[name]:
                altered.setdefault(before[name], []).append(name)
        if mountable:
            self.zfs.set_property('canmount', 'noauto', mountable)
        if writable:
            self.zfs.set_property('readonly', 'on', writable)
        for value, names in altered.items():
            if value == '-':
                self.zfs.inherit_property(STAMP_PROPERTY, names)
            else:
                self.zfs.set_property(STAMP_PROPERTY, value, names)
        if altered:
            self.log(syslog.LOG_WARNING, f'receive into {target} altered the arrival stamps of '
                                         f'{sum(len(n) for n in altered.values())} snapshot(s); restored')
        if arrived:
            self.zfs.set_property(STAMP_PROPERTY, str(int(self.clock())), arrived)

    def send(self, request: Send) -> int:
        if request.token is not None:
            # a resume token names its snapshot inside itself: ask zfs what it continues before sending anything
            res = self.zfs.send_estimate(['-t', request.token], False)
            toname = token_toname(res.stdout + '\n' + res.stderr)
            if res.rc != 0 or toname is None:
                return self._passed(res)
            if not inside(toname, self.roots):
                raise Refused(f'the resume token continues {toname}, outside {", ".join(self.roots)}')
            if request.estimate:
                return self._passed(res)
        elif request.estimate:
            return self._passed(self.zfs.send_estimate(request.send_args, request.raw))
        stages: list[tuple[str, ...]] = [send_argv(request.send_args, request.raw, self.zfs.zfs)]
        if request.mbuffer:
            stages.append(request.mbuffer)
        if request.compress:
            stages.append(COMPRESSORS[request.compress][0])
        rc = self._pipeline(stages)
        self.log(syslog.LOG_INFO, f'send of {request.snapshot or request.token}: rc {rc}')
        return rc

    def _failed(self, what: str, exc: ZfsCommandError) -> int:
        self.log(syslog.LOG_ERR, f'{what}: {exc}')
        self.stderr.write(f'pyzfsautosnap serve: {what}: {exc.stderr.strip() or exc}\n')
        self.stderr.flush()
        return 1

    def _pipeline(self, stages: t.Sequence[t.Sequence[str]]) -> int:
        """Run *stages* joined by pipes from our stdin to our stdout; markers for all but the last on stderr."""
        procs: list[subprocess.Popen[bytes]] = []
        try:
            source: t.Any = self.stdin
            for index, argv in enumerate(stages):
                last = index == len(stages) - 1
                try:
                    # held back until the child is in the list, so an interrupt stops it too
                    with deferred():
                        proc = subprocess.Popen(list(argv), stdin=source, stdout=self.stdout if last else subprocess.PIPE,
                                                env=self.env, preexec_fn=die_with_parent())  # noqa: PLW1509
                        procs.append(proc)
                except OSError as exc:
                    self.stderr.write(f'{argv[0]}: {exc}\n')
                    self._stop(procs)
                    codes = [127 if p.returncode is None else p.returncode for p in procs]
                    self._markers(codes + [127] * (len(stages) - len(codes)))
                    return 127
                if index:
                    source.close()
                source = proc.stdout
            codes = [_status(proc.wait()) for proc in procs]
        except BaseException:
            self._stop(procs)
            raise
        self._markers(codes)
        return codes[-1]

    def _markers(self, codes: t.Sequence[int]) -> None:
        for index, code in enumerate(codes[:-1]):
            self.stderr.write(f'{RC_MARKER} {index} {code}\n')
        self.stderr.flush()

    @staticmethod
    def _stop(procs: t.Sequence[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + _KILL_GRACE
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _status(rc: int) -> int:
    # what a shell reports for a child killed by a signal
    return 128 - rc if rc < 0 else rc


def serve(roots: t.Sequence[str], *, send: bool = False, zfs_path: str = 'zfs', stderr: t.TextIO | None = None,
          environ: t.Mapping[str, str] | None = None) -> int:
    """Handle the one command of this SSH session (``SSH_ORIGINAL_COMMAND``); returns the exit status."""
    command = (os.environ if environ is None else environ).get('SSH_ORIGINAL_COMMAND')
    server = Server(roots, 'send' if send else 'receive', zfs=Zfs(LocalRunner(), zfs_path), stderr=stderr)
    return server.handle(command)
