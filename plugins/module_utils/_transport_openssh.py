# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Remote hosts through the OpenSSH client binary.

All listings and streams of one run share a single connection: :meth:`open`
starts a master (``ControlMaster=yes``) whose socket lives in a private
temporary directory, and every later ``ssh`` call is a client of it.

The master stays the engine's own child (``-N``, ``ControlPersist=no``, never
``-f``): a daemonized master would outlive an engine that was killed, keeping
the connection and its socket around. Like every ``ssh`` started here it gets
the parent-death signal (see ``_signals``), so it ends with the engine even on
SIGKILL; :meth:`OpenSshTransport.open` therefore must be called from the thread
that runs the replication (the main thread), not from a short-lived one. Its
stderr goes to a file, because a pipe nobody reads could fill up.

The control directory is named ``pzas-<pid>-…`` after the engine that made it.
One left behind by an engine that was killed is removed by the next run, and
only when no process with that pid exists any more.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import typing as t

from ._signals import deferred, die_with_parent
from ._transport import LocalSegment, Segment, SshOptions, Stage, Transport, remote_command, remote_script
from ._types import ZfsCommandError
from ._zfs import CommandResult

# ssh's exit status for its own errors (connection, authentication, host key)
SSH_ERROR_RC = 255
# sockaddr_un.sun_path is 104 bytes on the BSDs, 108 on Linux; %C expands to 40
_MAX_SOCKET_DIR = 50
CONTROL_PREFIX = 'pzas-'
_CONTROL_DIR_RE = re.compile(r'^' + re.escape(CONTROL_PREFIX) + r'(\d+)-[A-Za-z0-9_]+$')
# how long a master gets to leave on its own after `ssh -O exit`, and after SIGTERM
MASTER_GRACE = 5.0
_READY_POLL = 0.05


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # someone else's process: alive
        return True
    return True


def stale_control_dirs(parents: t.Iterable[str]) -> list[str]:
    """Control directories of this user in *parents* whose engine (the pid in the name) is gone."""
    found = []
    for parent in dict.fromkeys(parents):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _CONTROL_DIR_RE.match(name)
            if not match or int(match.group(1)) == os.getpid():
                continue
            path = os.path.join(parent, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            if not _pid_alive(int(match.group(1))):
                found.append(path)
    return found


def reap_stale_control_dirs(parents: t.Iterable[str] | None = None) -> list[str]:
    """Remove what :func:`stale_control_dirs` finds; return the paths removed."""
    paths = stale_control_dirs(parents if parents is not None else (tempfile.gettempdir(), '/tmp'))
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return paths


def _reap(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class SshRunner:
    """Runs argv lists on the remote host; records each argv like LocalRunner does."""

    def __init__(self, transport: OpenSshTransport) -> None:
        self.transport = transport
        self.calls: list[list[str]] = []

    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        cmd = self.transport.ssh_argv(remote_command(argv))
        proc: subprocess.Popen[bytes] | None = None
        try:
            # a signal inside Popen would lose the started child: held back until it is ours
            with deferred():
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        preexec_fn=die_with_parent())  # noqa: PLW1509
            # never let ssh read the controller's own stdin
            out, err = proc.communicate(b'')
        except OSError as exc:
            _reap(proc)
            raise ZfsCommandError(cmd, 127, '', str(exc), stage='ssh') from exc
        except BaseException:
            _reap(proc)
            raise
        result = CommandResult(argv, t.cast(int, proc.returncode), out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace'))
        if result.rc == SSH_ERROR_RC:
            raise ZfsCommandError(['ssh', t.cast(str, self.transport.host), *argv], result.rc, result.stdout, result.stderr, stage='ssh')
        if check and result.rc != 0:
            raise ZfsCommandError(argv, result.rc, result.stdout, result.stderr)
        return result


class OpenSshTransport(Transport):
    kind = 'openssh'

    def __init__(self, host: str, options: SshOptions | None = None, ssh: str = 'ssh') -> None:
        self.host = host
        self.options = options or SshOptions()
        self.ssh = ssh
        self.control_dir: str | None = None
        self.master: subprocess.Popen[bytes] | None = None
        self.master_started = False
        self._runner = SshRunner(self)

    # ------------------------------------------------------------------ argv
    def base_options(self) -> list[str]:
        opts = self.options
        argv = [
            '-T', '-x', '-a',
            '-o', 'BatchMode=yes',
            # unknown or changed host keys fail; never accept-new, never no
            '-o', 'StrictHostKeyChecking=yes',
            '-o', f'ConnectTimeout={opts.connect_timeout}',
            '-o', 'ServerAliveInterval=15',
            '-o', 'ServerAliveCountMax=4',
            # zfs streams are compressed (send -c) or get zstd/lz4; ssh compression only costs CPU
            '-o', 'Compression=no',
            # forwardings from ssh_config would collide between parallel connections
            '-o', 'ClearAllForwardings=yes',
        ]
        if self.control_dir:
            argv += ['-o', f'ControlPath={self.control_path()}']
        if opts.config_file:
            argv += ['-F', opts.config_file]
        if opts.port:
            argv += ['-p', str(opts.port)]
        if opts.user:
            argv += ['-l', opts.user]
        if opts.identity_file:
            argv += ['-i', opts.identity_file, '-o', 'IdentitiesOnly=yes']
        if opts.known_hosts_file:
            argv += ['-o', f'UserKnownHostsFile={opts.known_hosts_file}']
        return argv

    def control_path(self) -> str:
        return os.path.join(t.cast(str, self.control_dir), '%C')

    def ssh_argv(self, command: str) -> list[str]:
        """argv of a local ssh process running *command* (one quoted command line) on the host."""
        mux = ['-o', 'ControlMaster=no'] if self.control_dir else []
        return [self.ssh, *self.base_options(), *mux, '--', t.cast(str, self.host), command]

    # ------------------------------------------------------------- lifecycle
    def _make_control_dir(self) -> str:
        prefix = f'{CONTROL_PREFIX}{os.getpid()}-'
        path = tempfile.mkdtemp(prefix=prefix)
        if len(path) > _MAX_SOCKET_DIR:
            os.rmdir(path)
            path = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
        os.chmod(path, 0o700)
        return path

    def master_argv(self) -> list[str]:
        return [self.ssh, *self.base_options(), '-o', 'ControlMaster=yes', '-o', 'ControlPersist=no',
                '-N', '--', t.cast(str, self.host)]

    def _socket_ready(self) -> bool:
        # the master binds a temporary name (with a dot) and renames it into place once it listens
        try:
            entries = list(os.scandir(t.cast(str, self.control_dir)))
        except OSError:
            return False
        return any('.' not in e.name and stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode) for e in entries)

    def open(self) -> None:
        if self.control_dir:
            return
        reap_stale_control_dirs()
        self.control_dir = self._make_control_dir()
        argv = self.master_argv()
        with tempfile.TemporaryFile() as err:
            try:
                try:
                    # held back until the master is ours to stop; preexec_fn only makes one prctl call
                    with deferred():
                        self.master = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                                       preexec_fn=die_with_parent())  # noqa: PLW1509
                except OSError as exc:
                    raise ZfsCommandError(argv, 127, '', str(exc), stage='ssh') from exc
                rc = self._wait_ready(self.master)
            except BaseException:
                self.close()
                raise
            if rc is not None:
                err.seek(0)
                stderr = err.read().decode('utf-8', 'replace')
                self.close()
                raise ZfsCommandError(['ssh', t.cast(str, self.host)], rc, '', stderr or 'could not connect', stage='ssh')
        self.master_started = True

    def _wait_ready(self, master: subprocess.Popen[bytes]) -> int | None:
        """None once the master listens; its exit status if it ended (or was stopped) before."""
        deadline = time.monotonic() + self.options.connect_timeout + 30
        while not self._socket_ready():
            rc = master.poll()
            if rc is not None:
                return rc if rc else SSH_ERROR_RC
            if time.monotonic() > deadline:
                self._stop_master()
                return SSH_ERROR_RC
            time.sleep(_READY_POLL)
        return None

    def _stop_master(self) -> None:
        master = self.master
        if master is None:
            return
        for step in (master.terminate, master.kill):
            if master.poll() is not None:
                break
            step()
            try:
                master.wait(MASTER_GRACE)
            except subprocess.TimeoutExpired:
                continue
        self.master = None

    def close(self) -> None:
        if self.control_dir is None:
            return
        # bounded, and a signal half way would leave the master running: held back until done
        with deferred():
            self._close()

    def _close(self) -> None:
        try:
            if self.master_started and self.master is not None and self.master.poll() is None:
                argv = [self.ssh, *self.base_options(), '-O', 'exit', '--', t.cast(str, self.host)]
                try:
                    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=30, check=False, preexec_fn=die_with_parent())
                except (OSError, subprocess.TimeoutExpired):
                    pass
                try:
                    self.master.wait(MASTER_GRACE)
                except subprocess.TimeoutExpired:
                    pass
            self._stop_master()
        finally:
            self.master_started = False
            shutil.rmtree(t.cast(str, self.control_dir), ignore_errors=True)
            self.control_dir = None

    # ------------------------------------------------------------ interface
    def runner(self) -> SshRunner:
        return self._runner

    def segment(self, stages: t.Sequence[Stage]) -> Segment:
        argv = self.ssh_argv(remote_script(stages))
        return LocalSegment([Stage('ssh', tuple(argv), remote=tuple(stages))])
