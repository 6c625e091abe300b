# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Boots QEMU guests with real OpenZFS for the integration tests, the demo and ``make vm-shell``.

Shapes:
- ``single``: one guest ``zfsguest`` with pools ``tank`` and ``zfsbackups``; SSH to itself works.
- ``pair``: guests ``client`` (pool ``tank``) and ``target`` (pool ``zfsbackups``) joined by a
  QEMU socket network whose host side binds 127.0.0.1 only (guest addresses 169.254.77.1/.2).

A shape's guests boot once per image: booted, they are saved (a qcow2 overlay of the root image and
the memory state, under the image's ``saved/``), and every run resumes them from there in seconds
instead of booting for a minute of emulated CPU. Their clocks are set on resuming, and the pools are
created fresh on empty disks every run. The saved state is keyed by how guests are started and saved
(``Testbed._boot``, ``Testbed._save``), the guest helpers, qemu's version and the shape's settings, so a
change to any of them boots and saves again.

Every qemu process is started with a parent-death signal and its pid recorded, so a crash, SIGINT or
SIGTERM of the test run never leaves one behind; stale runs are reaped on the next start.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import dataclasses
import fcntl
import functools
import hashlib
import inspect
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

import hmp

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_PREFIX = 'pyzfsautosnap-testbed-'
LINK_ADDRS = {'client': '169.254.77.1/24', 'target': '169.254.77.2/24'}
DISK_SIZE = 8 * 1024 ** 3  # sparse: only written blocks use host disk


def log(msg: str) -> None:
    print(f'[testbed {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


@dataclasses.dataclass
class Guest:
    name: str
    port: int
    pools: dict[str, str]  # pool name -> guest block device
    rundir: str
    pid: int = 0
    link_addr: str | None = None

    @property
    def console(self) -> str:
        return os.path.join(self.rundir, f'{self.name}.console.log')


def build(zfs_series: str) -> str:
    """Build or reuse the cached image; returns its directory (TESTBED_IMAGE names one explicitly)."""
    if os.environ.get('TESTBED_IMAGE'):
        return os.environ['TESTBED_IMAGE']
    env = dict(os.environ, ZFS_SERIES=zfs_series)
    out = subprocess.run([os.path.join(HERE, 'build.sh')], env=env, check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


@functools.cache
def _qemu_version() -> str:
    return subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True, check=True).stdout.split('\n')[0]


def _prune_saved(base: str, shape: str, keep: str, age: float = 86400.0) -> None:
    """Remove this shape's states saved by other versions of the bed, once a day has passed since their saving."""
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if not entry.startswith(f'{shape}-') or path == keep or entry.endswith('.lock'):
            continue
        with contextlib.suppress(OSError):
            if time.time() - os.stat(os.path.join(path, 'complete')).st_mtime > age:
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path + '.lock')


def _overlay(path: str, backing: str, backing_format: str) -> str:
    """A new qcow2 file at *path* that writes its changes and reads the rest from *backing* (never written)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', backing_format, '-b', backing, path], check=True)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _set_pdeathsig() -> None:
    # qemu dies with the process that started it, even on SIGKILL of the test run
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()  # Ctrl-C in the terminal reaches the runner, which stops guests itself


def kvm_works(image: str) -> bool:
    """True only when a KVM guest really runs code (an openable /dev/kvm is not enough)."""
    if os.environ.get('TESTBED_ACCEL') in ('tcg', 'kvm'):
        return os.environ['TESTBED_ACCEL'] == 'kvm'
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return False
    argv = ['qemu-system-x86_64', '-accel', 'kvm', '-cpu', 'host', '-m', '256', '-nodefaults', '-no-user-config',
            '-display', 'none', '-serial', 'stdio', '-no-reboot', '-kernel', os.path.join(image, 'vmlinuz'),
            '-append', 'console=ttyS0 panic=-1 earlyprintk=ttyS0 init=/bin/false']
    try:
        out = subprocess.run(argv, capture_output=True, timeout=6, preexec_fn=_set_pdeathsig, check=False)
    except subprocess.TimeoutExpired as exc:
        out_text = (exc.stdout or b'').decode('utf-8', 'replace')
        return 'Linux version' in out_text
    return 'Linux version' in out.stdout.decode('utf-8', 'replace')


def reap_stale() -> None:
    """Stop guests of earlier runs whose owner died without cleaning up."""
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        if not entry.startswith(RUN_PREFIX):
            continue
        rundir = os.path.join(tmp, entry)
        owner = _read_pid(os.path.join(rundir, 'owner.pid'))
        if owner and _alive(owner):
            continue
        with contextlib.suppress(OSError):
            if not owner and time.time() - os.stat(rundir).st_mtime < 60:
                continue  # another run that is writing its owner.pid right now
        for name in os.listdir(rundir):
            if name.endswith('.qemu.pid'):
                pid = _read_pid(os.path.join(rundir, name))
                if pid and _is_qemu(pid):
                    _kill(pid)
        shutil.rmtree(rundir, ignore_errors=True)


def _read_pid(path: str) -> int:
    try:
        with open(path) as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_qemu(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as fh:
            return b'qemu-system' in fh.read()
    except OSError:
        return False


def _kill(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid) and _is_qemu(pid):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# boots of the whole bed before a kernel panic at boot fails it
BOOT_ATTEMPTS = 2


class GuestPanicked(RuntimeError):
    def __init__(self, guest: str, line: str, tail: str) -> None:
        super().__init__(f'{guest} panicked while booting: {tail}')
        self.guest = guest
        self.line = line


class PortTaken(RuntimeError):
    """Another process bound a port between our choosing it and qemu binding it (runs side by side)."""


class Testbed:
    """A set of running guests; use as a context manager so they always stop."""

    def __init__(self, shape: str = 'single', zfs_series: str | None = None, memory_mb: int | None = None) -> None:
        if shape not in ('single', 'pair'):
            raise ValueError(f'unknown shape {shape!r}')
        self.shape = shape
        self.zfs_series = zfs_series or os.environ.get('ZFS_SERIES', '2.4')
        self.memory_mb = memory_mb or (3072 if shape == 'single' else 2048)
        self.rundir = ''
        self.image = ''
        self.guests: dict[str, Guest] = {}
        self.key = ''
        self.known_hosts = ''
        self.accel = 'tcg'
        self._procs: list[subprocess.Popen] = []

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Testbed:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        reap_stale()
        self.image = build(self.zfs_series)
        self.rundir = tempfile.mkdtemp(prefix=RUN_PREFIX)
        with open(os.path.join(self.rundir, 'owner.pid'), 'w') as fh:
            fh.write(str(os.getpid()))
        self.accel = 'kvm' if kvm_works(self.image) else 'tcg'
        if self.shape == 'single':
            self.guests['zfsguest'] = Guest('zfsguest', _free_port(), {'tank': '/dev/vdb', 'zfsbackups': '/dev/vdc'}, self.rundir)
        else:
            self.guests['client'] = Guest('client', _free_port(), {'tank': '/dev/vdb'}, self.rundir, link_addr=LINK_ADDRS['client'])
            self.guests['target'] = Guest('target', _free_port(), {'zfsbackups': '/dev/vdb'}, self.rundir, link_addr=LINK_ADDRS['target'])
        saved = self._saved_state()
        self.key = os.path.join(self.rundir, 'id_ed25519')
        for suffix in ('', '.pub'):
            shutil.copyfile(os.path.join(saved, 'id_ed25519' + suffix), self.key + suffix)
        os.chmod(self.key, 0o600)
        self._write_known_hosts()
        self._start_guests(lambda: self._resume_all(saved))
        for guest in self.guests.values():
            self._open_master(guest)
            # a saved guest wakes up with the clock of its saving: names and ages are of today
            script = f'date -u -s @{time.time():.3f} >/dev/null'
            for pool, dev in guest.pools.items():
                script += f'; zpool create -f -o ashift=12 -O compression=lz4 -O atime=off {pool} {dev}'
            self.sh(guest.name, script)
        self.write_inventory()

    def _start_guests(self, start: t.Callable[[], None]) -> None:
        """*start* the guests (boot or resume); on a taken port or a kernel panic at boot, again on other ports."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            try:
                start()
                return
            except (GuestPanicked, PortTaken) as exc:
                # a rare kernel panic at boot under TCG (live code patching across vCPUs), or a port another
                # run bound first: the guests are fresh, so starting them again loses nothing
                if attempt == BOOT_ATTEMPTS:
                    raise
                log(f'{exc}; starting the guests again on other ports')
            self._kill_guests()
            for guest in self.guests.values():
                guest.port = _free_port()
            self._write_known_hosts()

    # ------------------------------------------------- saved guests, resumed
    def _saved_key(self) -> str:
        """What a saved state depends on: how guests are started and saved, the guest helpers, qemu itself."""
        digest = hashlib.sha256()
        for method in (Testbed._boot, Testbed._save):
            digest.update(inspect.getsource(method).encode())
        with open(os.path.join(HERE, 'guest', 'testbed_zipcache.py'), 'rb') as fh:
            digest.update(fh.read())
        digest.update(json.dumps([_qemu_version(), self.accel, self.memory_mb, DISK_SIZE,
                                  [(g.name, sorted(g.pools.items()), g.link_addr) for g in self.guests.values()]]).encode())
        return digest.hexdigest()[:16]

    def _saved_state(self) -> str:
        """The directory of this shape's saved guests (root overlays, memory states, the root key), saved first if need be."""
        base = os.path.join(self.image, 'saved')
        os.makedirs(base, exist_ok=True)
        saved = os.path.join(base, f'{self.shape}-{self._saved_key()}')
        if os.path.exists(os.path.join(saved, 'complete')):
            return saved
        # side-by-side runs of one shape wait for the first to save it
        with open(saved + '.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(os.path.join(saved, 'complete')):
                return saved
            shutil.rmtree(saved, ignore_errors=True)
            work = tempfile.mkdtemp(prefix=f'.{self.shape}-', dir=base)
            started = time.monotonic()
            try:
                self._save(work)
                os.rename(work, saved)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        log(f'saved {len(self.guests)} booted guest(s) in {time.monotonic() - started:.1f}s: {saved}')
        _prune_saved(base, self.shape, keep=saved)
        return saved

    def _save(self, work: str) -> None:
        self.key = os.path.join(work, 'id_ed25519')
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'testbed-run', '-f', self.key], check=True)
        self._write_known_hosts()
        self._start_guests(lambda: self._boot_all(work))
        for guest in self.guests.values():
            self._install_zipcache(guest)
            # timers that are due by a later clock would all fire on resuming; the guests live for one run
            self.sh(guest.name, "systemctl stop '*.timer'; sync")
        for guest in self.guests.values():
            hmp.command(self._monitor(guest), 'stop')
        for guest in self.guests.values():
            state = shlex.quote(os.path.join(work, f'{guest.name}.state.zst'))
            hmp.command(self._monitor(guest), f'migrate -d "exec:zstd -q -3 -o {state}"')
        for guest in self.guests.values():
            hmp.wait_migration(self._monitor(guest), timeout=600)
        self._kill_guests()
        with open(os.path.join(work, 'complete'), 'w') as fh:
            fh.write(f'{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}\n')

    def _resume_all(self, saved: str) -> None:
        started = time.monotonic()
        link_port = _free_port()
        for index, guest in enumerate(self.guests.values()):
            root = _overlay(os.path.join(self.rundir, f'{guest.name}.qcow2'), os.path.join(saved, f'{guest.name}.qcow2'), 'qcow2')
            link = None
            if guest.link_addr:
                link = f'socket,id=link,listen=127.0.0.1:{link_port}' if index == 0 else f'socket,id=link,connect=127.0.0.1:{link_port}'
            state = shlex.quote(os.path.join(saved, f'{guest.name}.state.zst'))
            self._boot(guest, link, root, ['-incoming', f'exec:zstd -dcq {state}'])
            if link and index == 0:
                self._wait_link(guest, link_port)
        for guest in self.guests.values():
            try:
                hmp.wait_migration(self._monitor(guest), timeout=180)
                hmp.command(self._monitor(guest), 'cont')
            except hmp.MonitorError as exc:
                tail = self._tail(guest)
                if 'host forwarding rule' in tail or 'Address already in use' in tail:
                    raise PortTaken(f'{guest.name}: a port was taken: {tail[-300:]}') from exc
                raise RuntimeError(f'{guest.name} could not be resumed from {saved} ({exc}); '
                                   f'delete that directory to boot and save the guests again: {tail}') from exc
        for guest in self.guests.values():
            self._wait_ssh(guest, timeout=120)
        log(f'{len(self.guests)} guest(s) resumed and answer SSH after {time.monotonic() - started:.1f}s ({self.accel})')

    def _boot_all(self, work: str) -> None:
        link_port = _free_port()
        started = time.monotonic()
        for index, guest in enumerate(self.guests.values()):
            link = None
            if guest.link_addr:
                link = f'socket,id=link,listen=127.0.0.1:{link_port}' if index == 0 else f'socket,id=link,connect=127.0.0.1:{link_port}'
            root = _overlay(os.path.join(work, f'{guest.name}.qcow2'), os.path.join(self.image, 'rootfs.ext4'), 'raw')
            self._boot(guest, link, root)
            if link and index == 0:
                self._wait_link(guest, link_port)
        for guest in self.guests.values():
            self._wait_ssh(guest)
        log(f'{len(self.guests)} guest(s) booted and answer SSH after {time.monotonic() - started:.1f}s ({self.accel})')

    def _wait_link(self, guest: Guest, port: int) -> None:
        try:
            _wait_listening(port, guest)
        except RuntimeError as exc:
            if 'Address already in use' in self._tail(guest):
                raise PortTaken(f'{guest.name}: the link port {port} was taken') from exc
            raise

    def _kill_guests(self) -> None:
        for guest in self.guests.values():
            if guest.pid and os.path.exists(self._control_path(guest.name)):
                # a master that does not answer must not keep the guests alive: qemu's end closes it anyway
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run([*self.ssh_argv(guest.name, None)[:-1], '-O', 'exit', 'root@127.0.0.1'], capture_output=True,
                                   stdin=subprocess.DEVNULL, check=False, timeout=10)
            if guest.pid:
                _kill(guest.pid)
                guest.pid = 0
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        self._procs.clear()

    def stop(self) -> None:
        self._kill_guests()
        if self.rundir and os.environ.get('TESTBED_KEEP_RUNDIR') != '1':
            shutil.rmtree(self.rundir, ignore_errors=True)

    # --------------------------------------------------------------- internals
    def _write_known_hosts(self) -> None:
        with open(os.path.join(self.image, 'host_ed25519_key.pub')) as fh:
            hostkey = ' '.join(fh.read().split()[:2])
        self.known_hosts = os.path.join(self.rundir, 'known_hosts')
        with open(self.known_hosts, 'w') as fh:
            for guest in self.guests.values():
                fh.write(f'[127.0.0.1]:{guest.port} {hostkey}\n')

    def _monitor(self, guest: Guest) -> str:
        return os.path.join(self.rundir, f'{guest.name}.monitor')

    def _boot(self, guest: Guest, link: str | None, root: str, extra: t.Sequence[str] = ()) -> None:
        with open(self.key + '.pub', 'rb') as fh:
            authkey = base64.b64encode(fh.read().strip()).decode()
        cmdline = (f'root=/dev/vda rw console=ttyS0 net.ifnames=0 mitigations=off systemd.hostname={guest.name} '
                   f'testbed.authkey={authkey}')
        if guest.link_addr:
            cmdline += f' testbed.linkaddr={guest.link_addr}'
        accel = ['-accel', 'kvm', '-cpu', 'host'] if self.accel == 'kvm' else ['-accel', 'tcg,thread=multi', '-cpu', 'qemu64']
        argv = ['qemu-system-x86_64', '-name', guest.name, *accel, '-smp', '2', '-m', str(self.memory_mb),
                '-nodefaults', '-no-user-config', '-display', 'none', '-serial', f'file:{guest.console}',
                '-kernel', os.path.join(self.image, 'vmlinuz'), '-initrd', os.path.join(self.image, 'initrd.img'),
                '-append', cmdline,
                '-drive', f'file={root},if=virtio,format=qcow2',
                '-monitor', f'unix:{self._monitor(guest)},server=on,wait=off',
                '-netdev', f'user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{guest.port}-:22',
                '-device', 'virtio-net-pci,netdev=n0', '-device', 'virtio-rng-pci']
        for pool in guest.pools:
            disk = os.path.join(self.rundir, f'{guest.name}-{pool}.img')
            with open(disk, 'wb') as fh:
                fh.truncate(DISK_SIZE)
            argv += ['-drive', f'file={disk},if=virtio,format=raw,cache=unsafe,discard=unmap']
        if link:
            mac = f"52:54:00:77:00:0{1 if guest.name == 'client' else 2}"
            argv += ['-netdev', link, '-device', f'virtio-net-pci,netdev=link,mac={mac}']
        argv += extra
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.rundir, f'{guest.name}.qemu.err'), 'wb'),
                                preexec_fn=_set_pdeathsig)  # noqa: PLW1509 - guests boot before tests start threads
        self._procs.append(proc)
        guest.pid = proc.pid
        with open(os.path.join(self.rundir, f'{guest.name}.qemu.pid'), 'w') as fh:
            fh.write(str(proc.pid))

    def _wait_ssh(self, guest: Guest, timeout: float = 420.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(guest.pid) or not _is_qemu(guest.pid):
                tail = self._tail(guest)
                if 'host forwarding rule' in tail or 'Address already in use' in tail:
                    raise PortTaken(f'{guest.name}: a port was taken: {tail[-300:]}')
                raise RuntimeError(f'qemu for {guest.name} exited: {tail}')
            panic = self._panic(guest)
            if panic:
                raise GuestPanicked(guest.name, panic, self._tail(guest))
            res = subprocess.run(self.ssh_argv(guest.name, ['true'], connect_timeout=5), capture_output=True, stdin=subprocess.DEVNULL, check=False)
            if res.returncode == 0:
                return
            time.sleep(2)
        raise RuntimeError(f'{guest.name} did not answer SSH within {timeout:.0f}s: {self._tail(guest)}')

    def _open_master(self, guest: Guest) -> None:
        # one SSH connection per guest that every later command rides on: a key exchange costs the guest
        # about 2 s of emulated CPU, a command on the open connection about 0.15 s
        argv = ['ssh', *self.ssh_options(), '-o', 'ConnectTimeout=20', '-o', 'ControlMaster=yes',
                '-o', f'ControlPath={self._control_path(guest.name)}', '-o', 'ControlPersist=yes', '-N', '-f',
                '-p', str(guest.port), 'root@127.0.0.1']
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)

    def _install_zipcache(self, guest: Guest) -> None:
        with open(os.path.join(HERE, 'guest', 'testbed_zipcache.py')) as fh:
            source = fh.read()
        self.ssh(guest.name, ['sh', '-ec', 'site=$(python3 -c "import sysconfig; print(sysconfig.get_path(\'purelib\'))"); '
                              'mkdir -p "$site"; cat > "$site/testbed_zipcache.py"; '
                              'echo "import testbed_zipcache" > "$site/testbed-zipcache.pth"'], input_text=source)

    def _control_path(self, name: str) -> str:
        # by port, so that ansible-playbook finds the same connection through ANSIBLE_SSH_CONTROL_PATH
        return os.path.join(self.rundir, f'{self.guests[name].port}.ssh')

    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible-playbook runs against the guests: they ride on the guests' open connections."""
        return {'ANSIBLE_SSH_CONTROL_PATH': os.path.join(self.rundir, '%%p.ssh'),
                'ANSIBLE_SSH_ARGS': '-o ControlMaster=auto -o ControlPersist=60s'}

    def _panic(self, guest: Guest) -> str:
        with contextlib.suppress(OSError), open(guest.console, errors='replace') as fh:
            for line in fh:
                if 'Kernel panic - not syncing' in line:
                    return line.strip()
        return ''

    def _tail(self, guest: Guest) -> str:
        text = ''
        for path in (guest.console, os.path.join(self.rundir, f'{guest.name}.qemu.err')):
            with contextlib.suppress(OSError), open(path, errors='replace') as fh:
                text += fh.read()[-3000:]
        return text

    # ------------------------------------------------------------------ access
    def ssh_options(self) -> list[str]:
        return ['-i', self.key, '-o', 'IdentitiesOnly=yes', '-o', f'UserKnownHostsFile={self.known_hosts}',
                '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR']

    def ssh_argv(self, name: str, argv: t.Sequence[str] | None, connect_timeout: int = 20) -> list[str]:
        guest = self.guests[name]
        # commands use the guest's open connection when there is one and connect themselves otherwise
        cmd = ['ssh', *self.ssh_options(), '-o', f'ConnectTimeout={connect_timeout}', '-o', 'ControlMaster=no',
               '-o', f'ControlPath={self._control_path(name)}', '-p', str(guest.port), 'root@127.0.0.1']
        if argv is not None:
            cmd.append(' '.join(shlex.quote(a) for a in argv))
        return cmd

    def ssh(self, name: str, argv: t.Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run *argv* in guest *name* (quoted for its shell)."""
        res = subprocess.run(self.ssh_argv(name, argv), capture_output=True, text=True, input=input_text,
                             stdin=None if input_text is not None else subprocess.DEVNULL, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f'{name}: {argv} failed rc={res.returncode}: {res.stderr.strip()}')
        return res

    def sh(self, name: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell script in guest *name* (test helpers only; the collection never does this)."""
        return self.ssh(name, ['sh', '-ec', script], check=check)

    def write_inventory(self) -> str:
        path = os.path.join(self.rundir, 'inventory.ini')
        common = ' '.join(self.ssh_options()[2:])  # the key is set by its own variable
        with open(path, 'w') as fh:
            fh.write('[zfs]\n')
            for guest in self.guests.values():
                fh.write(f'{guest.name} ansible_host=127.0.0.1 ansible_port={guest.port} ansible_user=root '
                         f'ansible_ssh_private_key_file={self.key} ansible_python_interpreter=/usr/bin/python3 '
                         f'ansible_ssh_common_args="{common}"\n')
        self.inventory = path
        return path

    def describe(self) -> dict[str, t.Any]:
        return {'shape': self.shape, 'zfs_series': self.zfs_series, 'accel': self.accel, 'inventory': self.inventory,
                'guests': {g.name: {'port': g.port, 'pools': list(g.pools)} for g in self.guests.values()}}


def _wait_listening(port: int, guest: Guest, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.settimeout(0.5)
            if sock.connect_ex(('127.0.0.1', port)) == 0:
                return
        if not _alive(guest.pid):
            break
        time.sleep(0.2)
    raise RuntimeError(f'{guest.name} did not open its link socket on 127.0.0.1:{port}')


def _terminate_on_signals() -> None:
    # turn SIGTERM/SIGHUP into an exception so `with Testbed()` cleans up
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f'signal {signum}')
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('command', choices=['build', 'shell', 'info', 'reap'])
    parser.add_argument('--shape', choices=['single', 'pair'], default='single')
    parser.add_argument('--zfs', dest='zfs_series', default=os.environ.get('ZFS_SERIES', '2.4'))
    args = parser.parse_args(argv)
    _terminate_on_signals()
    if args.command == 'build':
        print(build(args.zfs_series))
        return 0
    if args.command == 'reap':
        reap_stale()
        return 0
    with Testbed(args.shape, args.zfs_series) as bed:
        if args.command == 'info':
            print(json.dumps(bed.describe(), indent=2))
            for name in bed.guests:
                print(f'--- {name}: zfs version; zpool list')
                print(bed.ssh(name, ['zfs', 'version']).stdout, end='')
                print(bed.ssh(name, ['zpool', 'list']).stdout, end='')
            return 0
        name = next(iter(bed.guests))
        log(f'shell on {name}; the guest stops when the shell exits (other guests: {", ".join(bed.guests)})')
        return subprocess.call([*bed.ssh_argv(name, None)[:-1], '-t', 'root@127.0.0.1'])


if __name__ == '__main__':
    sys.exit(main())
