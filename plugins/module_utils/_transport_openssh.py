# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Remote hosts through the OpenSSH client binary.

All listings and streams of one run share a single connection: :meth:`open`
starts a master (``ControlMaster=yes``, ``ControlPersist``) whose socket lives
in a private temporary directory, and every later ``ssh`` call is a client of
it. The master is started on its own, with its stderr in a file, because a
master forked by a client whose stderr is a pipe keeps that pipe open and
makes the reader wait until ControlPersist runs out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import typing as t

from ._transport import LocalSegment, Segment, SshOptions, Stage, Transport, remote_command, remote_script
from ._types import ZfsCommandError
from ._zfs import CommandResult

# ssh's exit status for its own errors (connection, authentication, host key)
SSH_ERROR_RC = 255
# sockaddr_un.sun_path is 104 bytes on the BSDs, 108 on Linux; %C expands to 40
_MAX_SOCKET_DIR = 50


class SshRunner:
    """Runs argv lists on the remote host; records each argv like LocalRunner does."""

    def __init__(self, transport: OpenSshTransport) -> None:
        self.transport = transport
        self.calls: list[list[str]] = []

    def run(self, argv: t.Sequence[str], *, check: bool = True, input_bytes: bytes | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        cmd = self.transport.ssh_argv(remote_command(argv))
        try:
            # never let ssh read the controller's own stdin
            proc = subprocess.run(cmd, input=input_bytes or b'', capture_output=True, check=False)
        except OSError as exc:
            raise ZfsCommandError(cmd, 127, '', str(exc), stage='ssh') from exc
        result = CommandResult(argv, proc.returncode, proc.stdout.decode('utf-8', 'replace'),
                               proc.stderr.decode('utf-8', 'replace'))
        if result.rc == SSH_ERROR_RC:
            raise ZfsCommandError(['ssh', self.transport.host, *argv], result.rc, result.stdout, result.stderr, stage='ssh')
        if check and result.rc != 0:
            raise ZfsCommandError(argv, result.rc, result.stdout, result.stderr)
        return result


class OpenSshTransport(Transport):
    kind = 'openssh'

    def __init__(self, host: str, options: SshOptions | None = None, ssh: str = 'ssh', control_persist: int = 300) -> None:
        self.host = host
        self.options = options or SshOptions()
        self.ssh = ssh
        self.control_persist = control_persist
        self.control_dir: str | None = None
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
        path = tempfile.mkdtemp(prefix='pzas-')
        if len(path) > _MAX_SOCKET_DIR:
            os.rmdir(path)
            path = tempfile.mkdtemp(prefix='pzas-', dir='/tmp')
        os.chmod(path, 0o700)
        return path

    def open(self) -> None:
        if self.control_dir:
            return
        self.control_dir = self._make_control_dir()
        argv = [self.ssh, *self.base_options(), '-o', 'ControlMaster=yes',
                '-o', f'ControlPersist={self.control_persist}', '-f', '-N', '--', t.cast(str, self.host)]
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            except OSError as exc:
                self.close()
                raise ZfsCommandError(argv, 127, '', str(exc), stage='ssh') from exc
            try:
                rc = proc.wait(timeout=self.options.connect_timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            err.seek(0)
            stderr = err.read().decode('utf-8', 'replace')
        if rc != 0:
            self.close()
            raise ZfsCommandError(['ssh', t.cast(str, self.host)], rc, '', stderr or 'could not connect', stage='ssh')
        self.master_started = True

    def close(self) -> None:
        if self.control_dir is None:
            return
        if self.master_started:
            argv = [self.ssh, *self.base_options(), '-O', 'exit', '--', t.cast(str, self.host)]
            try:
                subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.master_started = False
        shutil.rmtree(self.control_dir, ignore_errors=True)
        self.control_dir = None

    # ------------------------------------------------------------ interface
    def runner(self) -> SshRunner:
        return self._runner

    def segment(self, stages: t.Sequence[Stage]) -> Segment:
        argv = self.ssh_argv(remote_script(stages))
        return LocalSegment([Stage('ssh', tuple(argv), remote=tuple(stages))])
