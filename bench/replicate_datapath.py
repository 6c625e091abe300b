# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The replication data path against plain ssh, on this host over 127.0.0.1, as ratios.

    python bench/replicate_datapath.py [--size-mib 1024] [--runs 3] [--consumer mbuffer|cat]

A private sshd (ListenAddress 127.0.0.1, a free port, a temporary host key, a temporary client key
authorized for the current user) serves every connection; clients verify its host key against a
temporary known_hosts file and read an empty ssh_config, so ~/.ssh/config plays no part. Sessions
get HOME set to the temporary directory, so the user's shell rc files (which may start anything)
do not run in every session.

The same bytes (SIZE MiB of random data in /dev/shm, read by ``cat``) go to the same remote consumer
(the receiving mbuffer of a replication writing to /dev/null, or ``cat > /dev/null``) by:

- baseline: ``cat FILE | ssh HOST CONSUMER``, with the options and cipher choice of the openssh transport;
- openssh: the engine's pipeline (``run_pipeline``) from a local ``cat FILE`` segment to the openssh
  transport's segment of the consumer, through its ControlMaster connection;
- paramiko: the same with the paramiko transport (one channel of a paramiko connection);
- baseline_paramiko_cipher: the baseline with ``-c`` set to the cipher paramiko negotiated, to tell
  the cost of the cipher from the cost of Python.

The ratios compare the streams alone: the baseline from the moment ssh reports it is authenticated
(``-v``) to its exit, the transports for the duration of ``run_pipeline`` with their connection
already open, as in a replication, where the listings open it first. Both include opening the
session and starting the remote command. Times with connecting are reported too. Modes are
interleaved within each run and the median of RUNS runs is reported; a ratio is throughput over the
baseline's, so above 1 is faster. Other load on the host (a QEMU guest, say) is reported with the
figures, since on a small machine it decides them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import typing as t

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SSHD = '/usr/sbin/sshd'
HOST = '127.0.0.1'
MIB = 1024 * 1024


def load_engine() -> types.SimpleNamespace:
    """plugins/module_utils as a package of its own, as the CLI runs it on hosts without Ansible."""
    package = types.ModuleType('pyzfsautosnap')
    package.__path__ = [os.path.join(REPO, 'plugins', 'module_utils')]
    sys.modules['pyzfsautosnap'] = package
    mods = {name: importlib.import_module(f'pyzfsautosnap.{name}')
            for name in ('_pipeline', '_transport', '_transport_factory', '_transport_openssh', '_transport_paramiko')}
    return types.SimpleNamespace(**{name.lstrip('_'): mod for name, mod in mods.items()})


ENGINE = load_engine()


def need_tools() -> None:
    missing = [tool for tool in ('ssh', 'ssh-keygen', 'cat', 'mbuffer') if not shutil.which(tool)]
    if not os.path.exists(SSHD):
        missing.append(SSHD)
    if missing:
        sys.exit(f'missing: {", ".join(missing)}. On Debian/Ubuntu: apt-get install -y openssh-server openssh-client mbuffer')
    if not ENGINE.transport_paramiko.HAS_PARAMIKO:
        sys.exit('the paramiko Python library is not importable by this interpreter (pip install paramiko)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


SSHD_CONFIG = '''ListenAddress {host}
HostKey {tmp}/host_key
PidFile none
AuthorizedKeysFile {tmp}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
LogLevel ERROR
# the user's shell rc files stay out of the sessions (they can cost more than the stream)
SetEnv HOME={tmp}
'''


class PrivateSshd:
    """sshd on 127.0.0.1 with throwaway keys; ``options`` are what a transport needs to reach it."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = os.environ.get('USER') or subprocess.run(['id', '-un'], capture_output=True, text=True, check=True).stdout.strip()

    def __enter__(self) -> PrivateSshd:
        tmp = self.tmp
        for name in ('host_key', 'client_key'):
            subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'pzas-bench-{name}', '-f', os.path.join(tmp, name)],
                           check=True, stdin=subprocess.DEVNULL)
        shutil.copy(os.path.join(tmp, 'client_key.pub'), os.path.join(tmp, 'authorized_keys'))
        with open(os.path.join(tmp, 'host_key.pub')) as fh:
            key_type, key_b64 = fh.read().split()[:2]
        with open(os.path.join(tmp, 'known_hosts'), 'w') as fh:
            fh.write(f'[{HOST}]:{self.port} {key_type} {key_b64}\n')
        with open(os.path.join(tmp, 'ssh_config'), 'w') as fh:
            fh.write('# empty: only the options given on the command line apply\n')
        with open(os.path.join(tmp, 'sshd_config'), 'w') as fh:
            fh.write(SSHD_CONFIG.format(host=HOST, tmp=tmp))
        if os.geteuid() == 0:
            # sshd refuses to start without its privilege separation directory
            os.makedirs('/run/sshd', mode=0o755, exist_ok=True)
        self.errlog = open(os.path.join(tmp, 'sshd.log'), 'w+')  # noqa: SIM115
        self.proc = subprocess.Popen([SSHD, '-D', '-e', '-f', os.path.join(tmp, 'sshd_config'), '-p', str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=self.errlog, stderr=self.errlog)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                self.errlog.seek(0)
                raise SystemExit(f'sshd exited with {self.proc.returncode}: {self.errlog.read().strip()}')
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit('sshd did not start listening within 20 s') from None
                time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()

    @property
    def pid(self) -> int:
        return t.cast(subprocess.Popen, self.proc).pid

    @property
    def options(self) -> t.Any:
        return ENGINE.transport.SshOptions(user=self.user, port=self.port, identity_file=os.path.join(self.tmp, 'client_key'),
                                           known_hosts_file=os.path.join(self.tmp, 'known_hosts'),
                                           config_file=os.path.join(self.tmp, 'ssh_config'))


# ------------------------------------------------------------------ the measured things
def consumer_argv(kind: str) -> tuple[str, ...]:
    if kind == 'mbuffer':
        # the receiving mbuffer of a replication, writing where zfs receive would read
        return (*ENGINE.pipeline.mbuffer_argv('128M'), '-o', '/dev/null')
    return ('sh', '-c', 'exec cat > /dev/null')


def plain_ssh_argv(sshd: PrivateSshd, command: str, cipher: str | None = None, verbose: bool = False) -> list[str]:
    """ssh as the openssh transport runs it, minus the ControlMaster: same options, same cipher choice."""
    transport = ENGINE.transport_openssh.OpenSshTransport(HOST, sshd.options)
    extra = (['-c', cipher] if cipher else []) + (['-v'] if verbose else [])
    return ['ssh', *transport.base_options(), *extra, '--', HOST, command]


def ssh_cipher(sshd: PrivateSshd, cipher: str | None = None) -> str:
    out = subprocess.run(plain_ssh_argv(sshd, 'true', cipher, verbose=True), capture_output=True, text=True, check=True,
                         stdin=subprocess.DEVNULL)
    match = re.search(r'kex: client->server cipher: (\S+)', out.stderr)
    return match.group(1) if match else 'unknown'


def paramiko_cipher(sshd: PrivateSshd) -> str:
    with ENGINE.transport_paramiko.ParamikoTransport(HOST, sshd.options) as transport:
        return transport.client.get_transport().local_cipher


TICK = os.sysconf('SC_CLK_TCK')


def proc_cpu(pid: int, reaped_children: bool = False) -> float:
    """CPU seconds of process *pid*, or of its children it has waited for."""
    with open(f'/proc/{pid}/stat') as fh:
        fields = fh.read().rsplit(')', 1)[1].split()
    first = 13 if reaped_children else 11  # cutime, cstime / utime, stime
    return (int(fields[first]) + int(fields[first + 1])) / TICK


def own_cpu() -> tuple[float, float]:
    """CPU seconds of this process (all its threads) and of its children it has waited for."""
    now = os.times()
    return now.user + now.system, now.children_user + now.children_system


def master_pid(transport: t.Any) -> int:
    out = subprocess.run([transport.ssh, *transport.base_options(), '-O', 'check', '--', transport.host],
                         capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    match = re.search(r'pid=(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else 0


def settle_server(sshd: PrivateSshd) -> float:
    """sshd's CPU for sessions that ended, once it has reaped them all."""
    deadline = time.monotonic() + 5
    last = proc_cpu(sshd.pid, reaped_children=True)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = proc_cpu(sshd.pid, reaped_children=True)
        if now == last and len(os.listdir(f'/proc/{sshd.pid}/task')) and not children_of(sshd.pid):
            return now
        last = now
    return last


def children_of(pid: int) -> list[str]:
    try:
        with open(f'/proc/{pid}/task/{pid}/children') as fh:
            return fh.read().split()
    except OSError:
        return []


def run_baseline(sshd: PrivateSshd, path: str, consumer: tuple[str, ...], cipher: str | None = None) -> dict[str, float]:
    """``cat FILE | ssh HOST CONSUMER``; the stream is timed from the moment ssh reports it is authenticated."""
    command = ENGINE.transport.remote_command(consumer)
    server0 = settle_server(sshd)
    _self0, kids0 = own_cpu()
    started = time.monotonic()
    read_end, write_end = os.pipe()
    ssh = subprocess.Popen(plain_ssh_argv(sshd, command, cipher, verbose=True), stdin=read_end, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    os.close(read_end)
    log = []
    for line in ssh.stderr:
        log.append(line)
        if line.startswith(b'Authenticated to ') or b': Authenticated to ' in line:
            break
    streaming = time.monotonic()
    cat = subprocess.Popen(['cat', path], stdout=write_end)
    os.close(write_end)
    log.append(ssh.stderr.read())
    ssh.wait()
    cat.wait()
    ended = time.monotonic()
    if ssh.returncode or cat.returncode:
        text = b''.join(log).decode(errors='replace')
        raise SystemExit(f'baseline failed (ssh rc {ssh.returncode}, cat rc {cat.returncode}): {text[-2000:]}')
    client = own_cpu()[1] - kids0
    return {'seconds': ended - streaming, 'total_seconds': ended - started, 'client_cpu': client,
            'server_cpu': settle_server(sshd) - server0}


def run_transport(sshd: PrivateSshd, kind: str, path: str, consumer: tuple[str, ...], size: int) -> dict[str, float]:
    """The engine's pipeline; the stream is timed by run_pipeline (the connection is already up)."""
    producer = ENGINE.transport.LocalSegment([ENGINE.transport.Stage('send', ('cat', path))])
    server0 = settle_server(sshd)
    self0, kids0 = own_cpu()
    master = 0.0
    started = time.monotonic()
    transport = ENGINE.transport_factory.make_transport(HOST, kind, sshd.options)
    with transport:
        result = ENGINE.pipeline.run_pipeline(producer, transport.segment([ENGINE.transport.Stage('receive', consumer)]))
        if kind == 'openssh':
            # the ControlMaster forked itself away: its CPU is read before it exits
            pid = master_pid(transport)
            master = proc_cpu(pid) if pid else float('nan')
    total = time.monotonic() - started
    self1, kids1 = own_cpu()
    if result.bytes != size:
        raise SystemExit(f'{kind}: the pipeline moved {result.bytes} bytes, expected {size}')
    return {'seconds': result.seconds, 'total_seconds': total, 'client_cpu': self1 - self0 + kids1 - kids0 + master,
            'server_cpu': settle_server(sshd) - server0}


def make_payload(size: int) -> str:
    where = '/dev/shm' if os.path.isdir('/dev/shm') else None
    fd, path = tempfile.mkstemp(prefix='pzas-datapath-', suffix='.bin', dir=where)
    block = 16 * MIB
    with os.fdopen(fd, 'wb') as fh:
        left = size
        while left:
            fh.write(os.urandom(min(block, left)))
            left -= min(block, left)
    return path


def other_load() -> dict[str, t.Any]:
    """What else competes for the CPUs: a benchmark on a busy host says so in its report."""
    qemus = subprocess.run(['pgrep', '-c', '-f', '^qemu-system'], capture_output=True, text=True, check=False).stdout.strip()
    return {'loadavg_1m': round(os.getloadavg()[0], 2), 'qemu_processes': int(qemus or 0)}


def summarize(samples: list[dict[str, float]], size: int, base: dict[str, float] | None) -> dict[str, t.Any]:
    seconds = statistics.median(s['seconds'] for s in samples)
    total = statistics.median(s['total_seconds'] for s in samples)
    out: dict[str, t.Any] = {
        'stream_mib_per_s': round(size / MIB / seconds, 1),
        'stream_seconds': round(seconds, 3),
        'with_connect_seconds': round(total, 3),
        'runs_stream_seconds': [round(s['seconds'], 3) for s in samples],
        'client_cpu_seconds': round(statistics.median(s['client_cpu'] for s in samples), 2),
        'server_cpu_seconds': round(statistics.median(s['server_cpu'] for s in samples), 2),
    }
    if base is not None:
        out['ratio'] = round(base['seconds'] / seconds, 3)
        out['ratio_with_connect'] = round(base['total_seconds'] / total, 3)
        cpu = statistics.median(s['client_cpu'] + s['server_cpu'] for s in samples)
        out['cpu_ratio'] = round((base['client_cpu'] + base['server_cpu']) / cpu, 3)
    return out


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-mib', type=int, default=1024, help='bytes moved per measurement, in MiB')
    parser.add_argument('--runs', type=int, default=3, help='runs of each mode; the median is reported')
    parser.add_argument('--consumer', choices=('mbuffer', 'cat'), default='mbuffer',
                        help="remote command: the replication's receiving mbuffer into /dev/null, or cat > /dev/null")
    parser.add_argument('--modes', default='baseline,openssh,paramiko,baseline_paramiko_cipher',
                        help='comma-separated subset of the modes to run')
    args = parser.parse_args()
    need_tools()
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    size = args.size_mib * MIB
    consumer = consumer_argv(args.consumer)
    import paramiko

    report: dict[str, t.Any] = {
        'date': dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'host': {'cpus': os.cpu_count(), 'machine': platform.machine(), 'python': platform.python_version(),
                 'paramiko': paramiko.__version__,
                 'openssh': subprocess.run(['ssh', '-V'], capture_output=True, text=True, check=False).stderr.strip()},
        'size_mib': args.size_mib, 'runs': args.runs, 'consumer': ENGINE.transport.quote_argv(consumer),
        'load_before': other_load(),
    }
    path = make_payload(size)
    try:
        with tempfile.TemporaryDirectory(prefix='pzas-sshd-') as tmp, PrivateSshd(tmp) as sshd:
            ciphers = {'openssh': ssh_cipher(sshd), 'paramiko': paramiko_cipher(sshd)}
            report['ciphers'] = dict(ciphers, baseline=ciphers['openssh'], baseline_paramiko_cipher=ciphers['paramiko'])
            runners: dict[str, t.Callable[[], dict[str, float]]] = {
                'baseline': lambda: run_baseline(sshd, path, consumer),
                'baseline_paramiko_cipher': lambda: run_baseline(sshd, path, consumer, ciphers['paramiko']),
                'openssh': lambda: run_transport(sshd, 'openssh', path, consumer, size),
                'paramiko': lambda: run_transport(sshd, 'paramiko', path, consumer, size),
            }
            unknown = sorted(set(modes) - set(runners))
            if unknown:
                parser.error(f'unknown mode(s): {", ".join(unknown)}')
            samples: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            for run in range(args.runs):
                for mode in modes:
                    sample = runners[mode]()
                    samples[mode].append(sample)
                    print(f'run {run + 1}/{args.runs} {mode}: {size / MIB / sample["seconds"]:.0f} MiB/s '
                          f'({sample["total_seconds"]:.2f} s with connecting; CPU s: client {sample["client_cpu"]:.2f}, '
                          f'server {sample["server_cpu"]:.2f})', file=sys.stderr, flush=True)
    finally:
        os.unlink(path)
    report['load_after'] = other_load()
    base = medians(samples['baseline']) if 'baseline' in samples else None
    report['results'] = {mode: summarize(samples[mode], size, base) for mode in modes}
    if 'baseline_paramiko_cipher' in samples and 'paramiko' in samples:
        same = medians(samples['baseline_paramiko_cipher'])['seconds']
        report['results']['paramiko']['ratio_to_same_cipher_baseline'] = round(same / medians(samples['paramiko'])['seconds'], 3)
    report['targets'] = {'openssh': '>= 0.97 x baseline', 'paramiko': '>= 0.8 x baseline'}
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    out = os.path.join(HERE, 'results', f'replicate_datapath-{args.consumer}-{args.size_mib}MiB.json')
    with open(out, 'w') as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
