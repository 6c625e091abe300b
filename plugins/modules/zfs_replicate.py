#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: zfs_replicate
short_description: Replicate ZFS snapshots incrementally to a backup pool, through mbuffer and SSH
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Sends the snapshots of the given datasets to a target pool with C(zfs send) and C(zfs receive), one stream per
    dataset and step, and keeps sending only what is new on later runs.
  - "Three shapes. B(Push): the module runs on the client and sends to O(target_host).
    B(Pull): the module runs on the backup server and pulls from O(source_host), so a compromised client holds no
    key to its backups. B(Local): both pools on the host the module runs on (neither host given)."
  - "Snapshots are matched between the pools by C(guid) and ordered by C(createtxg), never by name or time.
    Outcomes per dataset are C(none) (up to date), C(full) (target absent: the oldest selected snapshot in full,
    then increments), C(incremental) (from the newest snapshot or bookmark both sides have) and C(resume)
    (an interrupted receive left a C(receive_resume_token): the stream is resumed with C(zfs send -t), then the
    rest is sent). A stale token (its source snapshot is gone) is discarded with C(zfs receive -A) first."
  - Every dataset is planned before anything changes. If a target has diverged (it has snapshots after the common
    one, was written to since its last snapshot, has a same-named snapshot with another guid, or shares no snapshot
    with the source) the module fails with a message naming the problem and touches nothing, unless
    O(force_rollback=true) asks for C(zfs receive -F).
  - C(zfs send -I) carries every snapshot between its ends, so it is only used where every snapshot in between is
    selected; unselected snapshots (other labels, foreign names) are stepped over with C(-i). A bookmark can be the
    incremental source (C(-i) only).
  - "The stream: C(zfs send) (C(-w) raw for encrypted datasets, which stay encrypted; C(-L -e -c) otherwise),
    an optional sender-side mbuffer, optional O(compression) (over the network only), SSH, mbuffer on the
    receiving side, and C(zfs receive -s -u -o readonly=on -o canmount=noauto -o com.sun:auto-snapshot=false)
    (C(canmount) only for filesystems). The programs are joined by pipes, no shell runs on the host the module runs
    on, and the command line handed to the remote host's shell is built with C(shlex.quote)."
  - "Protecting the base: after the streams (also when a later dataset's stream failed, and during a long run at
    least once a minute) each replicated dataset's new common snapshot is held on both sides with the tag
    C(pyzfsautosnap:<target id>) (see O(target_id)), and only then are the previously held ones released. The
    autosnap pruner never destroys held snapshots, so the chain between the pools cannot break. The holds and
    releases of those datasets go in one C(zfs hold) and one C(zfs release) per side, so a run over many datasets
    spawns two C(zfs) processes per dataset (send and receive) plus a few per minute (and one or two more per dataset
    with O(source_bookmark) or O(target_retention))."
  - Runs that touch the same source dataset or target dataset on the same host are serialised by lock files.
options:
  datasets:
    description:
      - Source datasets (filesystems or volumes) to replicate.
    type: list
    elements: str
    required: true
  recursive:
    description:
      - Also replicate all descendants of O(datasets), each as its own stream, parents first.
    type: bool
    default: false
  exclude:
    description:
      - Shell-style patterns (C(fnmatch), case-sensitive) of source dataset names not to replicate.
      - V(tank/scratch) excludes only that dataset; use V(tank/scratch/*) as well to exclude its descendants.
    type: list
    elements: str
    default: []
  target_root:
    description:
      - Dataset under which the replicas are received, for example V(zfsbackups/client1).
      - Missing datasets between the pool and a replica are created with C(canmount=off) and
        C(com.sun:auto-snapshot=false). The pool must exist.
    type: str
    required: true
  target_layout:
    description:
      - How a source dataset name maps to its target.
      - V(full) appends the whole source name, pool included, to O(target_root), for example
        C(tank/home/alice) becomes C(zfsbackups/client1/tank/home/alice).
      - V(basename) appends the last component of the listed dataset and the path below it, for example with
        O(datasets=[tank/home]) C(tank/home/alice) becomes C(zfsbackups/client1/home/alice).
    type: str
    choices: [full, basename]
    default: full
  source_host:
    description:
      - Pull from this host over SSH; the module runs on the target. Mutually exclusive with O(target_host).
    type: str
  target_host:
    description:
      - Push to this host over SSH; the module runs on the source. Mutually exclusive with O(source_host).
    type: str
  labels:
    description:
      - Replicate only managed snapshots of these labels.
      - When not given, managed snapshots of every label are replicated. An empty list is an error, since a filter
        that lets nothing through would replicate nothing.
    type: list
    elements: str
    choices: [frequent, hourly, daily, weekly, monthly, yearly]
  prefix:
    description:
      - First part of managed snapshot names, as for the autosnap module.
    type: str
    default: zfs-auto-snap
  separator:
    description:
      - Character between O(prefix) and the label, as for the autosnap module.
    type: str
    default: _
  include_foreign:
    description:
      - Also replicate snapshots whose names are not managed (made by hand or by other tools).
    type: bool
    default: false
  force_rollback:
    description:
      - Let C(zfs receive -F) roll a diverged target back to the last common snapshot, destroying the target
        snapshots after it and changes made to it, or overwrite a target that exists without any snapshot.
      - A target that shares no snapshot with the source but has snapshots is never overwritten.
    type: bool
    default: false
  transport:
    description:
      - How to reach the remote host. V(auto) uses the OpenSSH client where it is installed, paramiko otherwise.
      - V(openssh) opens one multiplexed connection per run (C(ControlMaster), socket in a private temporary
        directory) used by all listings and streams.
      - Both check host keys strictly against known_hosts and never add unknown keys
        (C(StrictHostKeyChecking=yes), paramiko C(RejectPolicy)).
    type: str
    choices: [auto, openssh, paramiko]
    default: auto
  ssh_user:
    description:
      - Remote user. Default from ssh_config, else the current user.
    type: str
  ssh_port:
    description:
      - Remote SSH port. Default from ssh_config, else 22.
    type: int
  ssh_identity_file:
    description:
      - Private key to authenticate with (only this key is offered).
    type: path
  ssh_known_hosts_file:
    description:
      - known_hosts file to check the remote host key against, instead of the user's.
    type: path
  ssh_config_file:
    description:
      - ssh_config file to read instead of C(~/.ssh/config).
    type: path
  compression:
    description:
      - Compress the stream over the network with this program, which must exist on both hosts.
      - Ignored (with a warning) for local replication. C(zfs send -c) already keeps compressed blocks compressed.
    type: str
    choices: [none, zstd, lz4]
    default: none
  mbuffer:
    description:
      - Buffer the stream with mbuffer on the receiving host before C(zfs receive).
      - When mbuffer is missing on a host that needs it the module fails before sending anything.
    type: bool
    default: true
  mbuffer_size:
    description:
      - Memory of each mbuffer (C(-m)), for example V(128M), V(1G) or V(5%) of the RAM.
    type: str
    default: 128M
  source_mbuffer:
    description:
      - Also buffer with mbuffer on the sending host, after C(zfs send).
    type: bool
    default: false
  rate_limit:
    description:
      - Limit the stream to this many bytes per second (mbuffer C(-r)), for example V(50M).
      - Applied by the first mbuffer of the stream, so it needs O(mbuffer) or O(source_mbuffer).
    type: str
  stall_timeout:
    description:
      - Seconds the stream may stall before mbuffer's watchdog (C(-W)) stops it. V(0) turns the watchdog off.
    type: int
    default: 300
  timeout:
    description:
      - Seconds the whole run may take; a stream still running then is stopped and the module fails.
        The receive is resumable, so the next run continues where this one stopped. V(0) means no limit.
    type: int
    default: 0
  receive_properties:
    description:
      - Properties to set on the replicas (C(zfs receive -o)), on top of or overriding C(readonly=on),
        C(canmount=noauto) and C(com.sun:auto-snapshot=false).
      - Quote the values; YAML turns unquoted V(on) and V(off) into booleans, which are sent as C(on) and C(off).
    type: dict
    default: {}
  receive_exclude_properties:
    description:
      - Properties the replicas must not take from the stream (C(zfs receive -x)).
    type: list
    elements: str
    default: []
  target_id:
    description:
      - Names the target in the hold tag C(pyzfsautosnap:<target id>) and in source bookmark names.
      - Defaults to C(<target host>:<target_root>), where the target host is O(target_host) for push and this
        host's name for pull and local replication. Set it explicitly to keep the same tag when switching between
        push and pull; holds made under another tag are not released.
    type: str
  source_bookmark:
    description:
      - Also keep a bookmark of the common snapshot on the source (one per target; the previous one is destroyed),
        so an incremental is still possible if the held snapshot is destroyed by hand.
    type: bool
    default: false
  target_retention:
    description:
      - Prune managed replica snapshots on the target after receiving, as label to keep count, for example
        C(daily) to V(31). Labels not given are never pruned on the target.
      - Never destroys the common snapshot, held or cloned snapshots, the newest snapshot of a label, or snapshots
        whose names are not managed. The target never takes snapshots of its own.
      - For a pull, or a push to a target you trust the client with. A backup server whose keys run the forced command
        C(pyzfsautosnap serve) (the C(pyzfsautosnap.zfs.target) role) refuses it, and the run warns. There the server
        prunes on its own clock (C(pyzfsautosnap retain), the role's C(retention) per client; see C(docs/security.md)).
    type: dict
    default: {}
  lock_dir:
    description:
      - Directory of the lock files on the host the module runs on.
    type: path
    default: /run/lock
  lock_timeout:
    description:
      - Seconds to wait for another run on the same datasets to finish before failing.
    type: float
    default: 60
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Check mode lists both sides and reports the exact streams (from and to snapshots), the size estimates of
        C(zfs send -nvP), the datasets that would be created, the holds that would move and the snapshots that
        would be pruned. Nothing is sent and no lock is taken.
      - After a resume more steps may follow, which check mode cannot know before the resumed stream finished.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - OpenZFS 0.8 or later on both hosts (resumable send and receive, bookmarks).
  - mbuffer on the receiving host unless O(mbuffer=false), and on the sending host with O(source_mbuffer=true).
  - zstd or lz4 on both hosts when O(compression) names it.
  - For push and pull, the OpenSSH client or the paramiko Python library on the host the module runs on, and the
    remote host key in known_hosts.
notes:
  - The receiving user needs no root. See C(docs/permissions.md) in the collection for the C(zfs allow) sets of the
    sending and receiving users.
  - A stream cut in the middle (network, reboot, O(timeout)) leaves resumable state on the target; the next run
    resumes it and then sends the rest.
  - If the target runs out of space the module fails with the error of C(zfs receive); the source is not changed.
  - The stage that failed (send, mbuffer, compress, ssh, decompress, receive) is reported with its command, exit
    status and error output, not the stages that only died of a broken pipe because of it.
  - A dataset created as an intermediate parent (C(canmount=off), no snapshots) that later becomes a replication
    target itself counts as diverged; overwrite it with O(force_rollback=true).
  - When replication to a target is given up, release its holds with C(zfs release -r pyzfsautosnap:<target id>)
    on both sides, or the autosnap pruner keeps those snapshots forever.
seealso:
  - module: pyzfsautosnap.zfs.zfs_autosnap
  - name: zfs-send(8)
    description: OpenZFS manual of zfs send.
    link: https://openzfs.github.io/openzfs-docs/man/master/8/zfs-send.8.html
extends_documentation_fragment: []
'''

EXAMPLES = r'''
- name: Push a client's home datasets to the backup server
  pyzfsautosnap.zfs.zfs_replicate:
    datasets:
      - tank/home
    recursive: true
    target_host: backup.example.org
    ssh_user: zfsrecv-{{ inventory_hostname_short }}
    ssh_identity_file: /root/.ssh/id_zfsbackup
    target_root: zfsbackups/{{ inventory_hostname_short }}
    compression: zstd

- name: Pull from a client, run on the backup server (the client holds no key to the backups)
  pyzfsautosnap.zfs.zfs_replicate:
    source_host: client1.example.org
    ssh_user: zfssend
    ssh_known_hosts_file: /etc/pyzfsautosnap/known_hosts
    datasets:
      - tank
    recursive: true
    exclude:
      - tank/scratch
      - tank/scratch/*
    labels:
      - daily
      - weekly
    target_root: zfsbackups/client1
    target_id: backup1:zfsbackups/client1
    rate_limit: 80M

- name: Copy datasets between two local pools
  pyzfsautosnap.zfs.zfs_replicate:
    datasets:
      - tank/vm
    target_root: archive
    target_layout: basename
    mbuffer_size: 1G

- name: Show the plan without sending anything
  pyzfsautosnap.zfs.zfs_replicate:
    datasets:
      - tank/home
    target_host: backup.example.org
    target_root: zfsbackups/client1
  check_mode: true
  register: plan

- name: Report the streams
  ansible.builtin.debug:
    msg: "{{ plan.datasets | map(attribute='steps') | list }}"

- name: Roll back a target that was changed on the backup server (destroys what came after the common snapshot)
  pyzfsautosnap.zfs.zfs_replicate:
    datasets:
      - tank/db
    target_host: backup.example.org
    target_root: zfsbackups/client1
    force_rollback: true
'''

RETURN = r'''
mode:
  description: The shape of the replication.
  returned: success
  type: str
  choices: [push, pull, local]
  sample: push
transport:
  description: How the remote host was reached (V(local) when both pools are on this host).
  returned: success
  type: str
  choices: [openssh, paramiko, local]
  sample: openssh
source_host:
  description: O(source_host) as given.
  returned: success
  type: str
  sample: null
target_host:
  description: O(target_host) as given.
  returned: success
  type: str
  sample: backup.example.org
hold_tag:
  description: The tag of the holds that protect the common snapshots.
  returned: success
  type: str
  sample: pyzfsautosnap:backup.example.org:zfsbackups/client1
datasets:
  description:
    - One entry per source dataset, parents first. In check mode, what a run would do.
    - On failure, the datasets done so far and the one that failed (or, when planning failed, every plan).
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: Source dataset.
      type: str
      sample: tank/home
    target:
      description: Target dataset.
      type: str
      sample: zfsbackups/client1/tank/home
    action:
      description: What was done first; a resume may be followed by incremental steps.
      type: str
      choices: [none, full, incremental, resume]
      sample: incremental
    from:
      description: Snapshot or bookmark the incremental started from (the common one), null for a full stream.
      type: str
      sample: tank/home@zfs-auto-snap_daily-2024-05-01-0000
    to:
      description: Newest source snapshot the target has after the run.
      type: str
      sample: tank/home@zfs-auto-snap_daily-2024-05-02-0000
    steps:
      description: The streams, in order.
      type: list
      elements: dict
      contains:
        kind:
          description: Stream type.
          type: str
          choices: [full, incremental, resume]
        from:
          description: Incremental source (snapshot or bookmark).
          type: str
        to:
          description: Snapshot sent.
          type: str
        intermediates:
          description: Whether C(-I) carried the snapshots in between.
          type: bool
        rollback:
          description: Whether C(zfs receive -F) was used.
          type: bool
        snapshots:
          description: Snapshot names the target gains with this stream.
          type: list
          elements: str
        bytes:
          description: Bytes of the stream (not in check mode).
          type: int
        seconds:
          description: Duration of the stream (not in check mode).
          type: float
        estimated_bytes:
          description: Size estimate of C(zfs send -nvP) (check mode only).
          type: int
    bytes:
      description: Bytes sent for this dataset.
      type: int
      sample: 1073741824
    seconds:
      description: Time spent streaming.
      type: float
      sample: 9.8
    rate:
      description: Bytes per second, null when nothing was sent.
      type: int
      sample: 109565492
    estimated_bytes:
      description: Sum of the size estimates in check mode, null when an estimate was unavailable.
      type: int
      sample: 1073741824
    rollback:
      description: Whether the target was (or would be) rolled back.
      type: bool
      sample: false
    aborted_resume:
      description: Whether stale resumable state on the target was discarded with C(zfs receive -A).
      type: bool
      sample: false
    created_parents:
      description: Missing target datasets created (C(canmount=off)) to receive into.
      type: list
      elements: str
      sample: ['zfsbackups/client1', 'zfsbackups/client1/tank']
    held:
      description: Snapshots newly held with RV(hold_tag), on either side.
      type: list
      elements: str
      sample: ['tank/home@zfs-auto-snap_daily-2024-05-02-0000', 'zfsbackups/client1/tank/home@zfs-auto-snap_daily-2024-05-02-0000']
    released:
      description: Snapshots whose hold with RV(hold_tag) was released, on either side.
      type: list
      elements: str
      sample: ['tank/home@zfs-auto-snap_daily-2024-05-01-0000']
    bookmarked:
      description: Source bookmark created with O(source_bookmark).
      type: str
      sample: tank/home#zfs-auto-snap_daily-2024-05-02-0000.pyzfsautosnap-3f2a9c1d
    destroyed_bookmarks:
      description: This target's older source bookmarks destroyed with O(source_bookmark).
      type: list
      elements: str
      sample: []
    pruned:
      description: Target snapshots destroyed by O(target_retention).
      type: list
      elements: str
      sample: ['zfsbackups/client1/tank/home@zfs-auto-snap_daily-2024-03-01-0000']
    notes:
      description: Remarks about this dataset, also returned as warnings.
      type: list
      elements: str
      sample: ['no snapshot of this dataset is selected for replication']
    changed:
      description: Whether anything changed (or would change) for this dataset.
      type: bool
      sample: true
stage:
  description: The program that failed.
  returned: failure of a command
  type: str
  choices: [zfs, send, mbuffer, compress, ssh, decompress, receive, timeout, pipeline]
  sample: receive
cmd:
  description: The failed command as an argument list.
  returned: failure of a command
  type: list
  elements: str
  sample: ['zfs', 'receive', '-s', '-u', '-o', 'readonly=on', 'zfsbackups/client1/tank/home']
rc:
  description: Exit status of the failed command (negative when killed by a signal).
  returned: failure of a command
  type: int
  sample: 1
stderr:
  description: Error output of the failed command.
  returned: failure of a command
  type: str
  sample: "cannot receive incremental stream: out of space"
stages:
  description: Every stage of a failed stream with its command, exit status and error output.
  returned: failure of a stream
  type: list
  elements: dict
  sample: [{"name": "receive", "argv": ["zfs", "receive"], "rc": 1, "stderr": "out of space", "killed": false}]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._lock import LockTimeout
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._options import argument_spec as schema_spec, module_kwargs
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate import run_replicate
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_options import SCHEMA
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError


def argument_spec() -> dict:
    return schema_spec(SCHEMA)


def _property_value(value: object) -> str:
    # YAML reads on/off/yes/no as booleans; zfs wants on/off
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return str(value)


def main() -> None:
    module = AnsibleModule(
        **module_kwargs(SCHEMA),
        supports_check_mode=True,
    )
    params = dict(module.params)
    params['receive_properties'] = {k: _property_value(v) for k, v in params['receive_properties'].items()}
    try:
        result = run_replicate(params, check_mode=module.check_mode)
    except (ValidationError, LockTimeout) as exc:
        module.fail_json(msg=str(exc))
    if result.get('failed'):
        module.fail_json(**result)
    for warning in result.pop('warnings'):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
