#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: zfs_autosnap
short_description: Take scheduled ZFS snapshots and prune them by retention policy
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Takes C(zfs-auto-snapshot) style snapshots named C(<prefix><separator><label>-YYYY-MM-DD-HHMM) (UTC) of the
    selected datasets for every label that is due, and destroys the oldest snapshots of each label beyond its keep count.
  - A label is due on a dataset when none of its managed snapshots of that label falls in the current UTC slot
    (15-minute slot for C(frequent), hour, day, ISO week, month, year). Running twice in one slot changes nothing;
    after downtime one snapshot per due label is taken, not one per missed slot.
  - Snapshots made by the C(zfs-auto-snapshot) script with the same prefix and separator are recognised and rotated
    by the same rules. Snapshots with any other name are never touched.
  - Datasets are selected like the script does, from the effective (inherited) values of the user properties
    C(com.sun:auto-snapshot) and C(com.sun:auto-snapshot:<label>), read as the script reads them (a value
    containing V(false) is false, else one containing V(true) is true). V(false) excludes the dataset from that
    label, V(true) includes it; with both unset it is included, or excluded with O(default_exclude=true).
  - When the two properties disagree, the one set nearer to the dataset decides (set on the dataset itself beats
    inherited, a nearer ancestor beats a farther one), and on the same dataset the label's own property decides.
    The rules, and where they differ from the script, are in C(docs/selection.md) of this collection.
  - All due snapshots of one pool that share a name are created by one C(zfs snapshot) call, so they are atomic.
    Per dataset, the snapshots to prune are destroyed by one C(zfs destroy dataset@a,b,c) call.
  - Never destroys a held snapshot (including holds placed by replication), a snapshot with clones, the newest
    snapshot of a label, or a snapshot whose name is not managed. If a destroy batch is refused because a snapshot
    became held or cloned meanwhile, that snapshot is reported in RV(skipped) and the rest is destroyed.
  - Runs of this module and of the command line entry point on the same pools are serialised by one lock file per pool.
options:
  roots:
    description:
      - Datasets to consider (filesystems or volumes).
      - Required unless O(all_pools=true). An empty list is an error, it never stands for every pool.
      - A root that does not exist makes the module fail before anything is changed.
    type: list
    elements: str
  all_pools:
    description:
      - Consider every imported pool (as listed by C(zpool list)) instead of O(roots).
      - Mutually exclusive with O(roots).
    type: bool
    default: false
  recursive:
    description:
      - Also consider all descendants of O(roots).
    type: bool
    default: true
  exclude:
    description:
      - Shell-style patterns (C(fnmatch), case-sensitive) of dataset names to leave alone entirely.
      - V(tank/scratch) excludes only that dataset; use V(tank/scratch/*) as well to exclude its descendants.
    type: list
    elements: str
    default: []
  label:
    description:
      - Take and prune only this label. Requires O(keep). Mutually exclusive with O(policy).
    type: str
    choices: [frequent, hourly, daily, weekly, monthly, yearly]
  keep:
    description:
      - How many snapshots of O(label) to keep per dataset, counting the one taken in this run.
      - Must be at least 1; the newest snapshot of a label is always kept.
    type: int
  policy:
    description:
      - Mapping of label to keep count, for example C(daily) to V(7) and C(weekly) to V(4).
      - Labels are V(frequent), V(hourly), V(daily), V(weekly), V(monthly) and V(yearly); keep counts must be at least 1.
      - When neither O(policy) nor O(label) is given, the keep counts of the C(zfs-auto-snapshot) cron jobs are used
        (C(frequent) V(4), C(hourly) V(24), C(daily) V(31), C(weekly) V(8), C(monthly) V(12)).
      - Labels not in the policy are neither taken nor pruned.
      - An empty mapping is an error, it would take and prune nothing.
    type: dict
  prefix:
    description:
      - First part of the snapshot names. Letters, digits, V(_), V(-), V(.) and V(:) only.
    type: str
    default: zfs-auto-snap
  separator:
    description:
      - One character between O(prefix) and the label, like the script's C(--sep).
    type: str
    default: _
  frequent_minutes:
    description:
      - Length in minutes of the V(frequent) slot. Must divide 60.
    type: int
    default: 15
  default_exclude:
    description:
      - Include only datasets where C(com.sun:auto-snapshot) or C(com.sun:auto-snapshot:<label>) is V(true),
        like the script's C(--default-exclude).
    type: bool
    default: false
  skip_unchanged:
    description:
      - Do not take a snapshot of a dataset when nothing was written to it since its newest snapshot
        (its C(written) property is 0). Such datasets are reported in RV(skipped).
    type: bool
    default: false
  prune:
    description:
      - Destroy managed snapshots beyond the keep count.
    type: bool
    default: true
  snapshot:
    description:
      - Take due snapshots. V(false) only prunes, like the script's C(--destroy-only).
    type: bool
    default: true
  lock_dir:
    description:
      - Directory of the per-pool lock files C(pyzfsautosnap.<pool>.lock).
    type: path
    default: /run/lock
  lock_timeout:
    description:
      - Seconds to wait for another run on the same pools to finish before failing.
    type: float
    default: 60
  zfs_path:
    description:
      - The C(zfs) command to run.
    type: str
    default: zfs
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Check mode runs only the two listings and reports exactly the snapshots a real run would create and destroy.
      - Check mode takes no lock.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - The diff lists the managed snapshots of the considered datasets before and after the run.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - OpenZFS (C(zfs) and C(zpool) commands) on the target host.
notes:
  - Times in snapshot names are UTC, whatever the host's time zone.
  - Only names with exactly the configured O(prefix) and O(separator) are managed; the script's snapshots made with
    another C(--sep) are left alone.
  - Snapshots whose name lies in the current slot count as the slot's snapshot even if created by hand or by the script.
  - If a managed snapshot of a dataset was created after the current time (the clock went backwards), that
    dataset is not pruned in this run and a warning is returned.
  - Unlike the script, a disagreement between the two properties is settled by where they are set, not by
    O(default_exclude), and every dataset is decided on its own properties, never through a recursive snapshot
    of an ancestor. Values that are not exactly V(true) or V(false) are reported as warnings.
  - On zfs command line tools that cannot take several snapshots in one call, snapshots are taken one by one and a
    warning says they are not atomic.
  - A dataset whose C(com.sun:auto-snapshot*) value holds a tab is excluded with a warning (which value holds it
    cannot be known); a newline in a value is read as part of it. A listing that cannot be read unambiguously
    (a tab and a newline in one value) fails the run before any change.
  - Expired snapshots are destroyed with one C(zfs destroy ds@a,b,c) per dataset, split so that the argument stays
    under the kernel's 128 KiB limit for one argument.
seealso:
  - name: zfs-auto-snapshot
    description: The script whose naming, selection and rotation rules this module follows.
    link: https://github.com/zfsonlinux/zfs-auto-snapshot
extends_documentation_fragment: []
'''

EXAMPLES = r'''
- name: Snapshot every pool with the default schedule (frequent, hourly, daily, weekly, monthly)
  pyzfsautosnap.zfs.zfs_autosnap:
    all_pools: true

- name: Daily snapshots of tank, keeping a week, except scratch space
  pyzfsautosnap.zfs.zfs_autosnap:
    roots:
      - tank
    label: daily
    keep: 7
    exclude:
      - tank/scratch
      - tank/scratch/*

- name: Hourly and daily snapshots of two datasets, only where something changed
  pyzfsautosnap.zfs.zfs_autosnap:
    roots:
      - tank/home
      - tank/vm
    policy:
      hourly: 24
      daily: 14
    skip_unchanged: true

- name: Opt-in only, datasets marked with com.sun:auto-snapshot=true
  pyzfsautosnap.zfs.zfs_autosnap:
    all_pools: true
    default_exclude: true
    policy:
      daily: 31

- name: Show what would be pruned without taking snapshots
  pyzfsautosnap.zfs.zfs_autosnap:
    roots:
      - tank
    policy:
      hourly: 12
    snapshot: false
  check_mode: true
  diff: true
  register: autosnap

- name: Report the plan
  ansible.builtin.debug:
    var: autosnap.destroyed
'''

RETURN = r'''
created:
  description: Snapshots created (in check mode, that would be created), full names.
  returned: always
  type: list
  elements: str
  sample: ['tank/home@zfs-auto-snap_daily-2024-05-06-1234']
destroyed:
  description: Snapshots destroyed (in check mode, that would be destroyed), full names.
  returned: always
  type: list
  elements: str
  sample: ['tank/home@zfs-auto-snap_daily-2024-04-05-0000']
skipped:
  description:
    - Snapshots not created or not destroyed, with the reason, for example held, has clones,
      unchanged since the newest snapshot, or refused by C(zfs destroy).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Full snapshot name.
      type: str
      sample: tank/home@zfs-auto-snap_daily-2024-04-01-0000
    reason:
      description: Why it was skipped.
      type: str
      sample: held (1 user reference(s))
excluded:
  description: Datasets under the roots that get no label, with the reason (exclude pattern or property).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Dataset name.
      type: str
      sample: tank/scratch
    reason:
      description: Why it was excluded.
      type: str
      sample: "matches exclude pattern 'tank/scratch'"
datasets:
  description: Datasets considered (selected for at least one label).
  returned: always
  type: list
  elements: str
  sample: ['tank', 'tank/home']
labels:
  description: Per label, its keep count, the number of datasets selected for it and the snapshots created and destroyed.
  returned: always
  type: dict
  sample: {"daily": {"keep": 7, "datasets": 2, "created": 2, "destroyed": 2}}
snapshot_batches:
  description:
    - One entry per pool and snapshot name; all its snapshots were created by one C(zfs snapshot) call
      (more only when the argument list would be too long, see RV(snapshot_batches[].calls)).
  returned: always
  type: list
  elements: dict
  contains:
    pool:
      description: Pool name.
      type: str
      sample: tank
    label:
      description: Label of the snapshots.
      type: str
      sample: daily
    name:
      description: Snapshot name (after the C(@)).
      type: str
      sample: zfs-auto-snap_daily-2024-05-06-1234
    snapshots:
      description: Full names in the batch.
      type: list
      elements: str
      sample: ['tank@zfs-auto-snap_daily-2024-05-06-1234', 'tank/home@zfs-auto-snap_daily-2024-05-06-1234']
    calls:
      description: Number of C(zfs snapshot) calls run for the batch (0 in check mode).
      type: int
      sample: 1
destroy_batches:
  description: One entry per dataset pruned by one C(zfs destroy dataset@a,b,c) call (retries not counted).
  returned: always
  type: list
  elements: dict
  contains:
    dataset:
      description: Dataset name.
      type: str
      sample: tank/home
    snapshots:
      description: Full names asked to be destroyed.
      type: list
      elements: str
      sample: ['tank/home@zfs-auto-snap_daily-2024-04-05-0000']
commands:
  description: Every command run, as argument lists, in order (listings included).
  returned: always
  type: list
  elements: list
  sample: [['zfs', 'snapshot', 'tank@zfs-auto-snap_daily-2024-05-06-1234']]
errors:
  description: Failed zfs commands; the rest of the run still went ahead.
  returned: failure
  type: list
  elements: dict
  contains:
    cmd:
      description: The command.
      type: list
      elements: str
    rc:
      description: Its exit status.
      type: int
    stdout:
      description: Its standard output.
      type: str
    stderr:
      description: Its error output.
      type: str
    stage:
      description: Which program failed.
      type: str
      sample: zfs
cmd:
  description: The failed listing command, when the run stopped before changing anything.
  returned: failure
  type: list
  elements: str
rc:
  description: Exit status of the failed listing command.
  returned: failure
  type: int
stderr:
  description: Error output of the failed listing command.
  returned: failure
  type: str
'''

# imports follow the documentation blocks, as ansible-test requires
from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap import (  # noqa: E402
    LockTimeout,
    ValidationError,
    ZfsCommandError,
    run_autosnap,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap_options import SCHEMA, normalise, to_config  # noqa: E402
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._options import (  # noqa: E402
    argument_spec as schema_spec,
    module_kwargs,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import LocalRunner  # noqa: E402


def argument_spec() -> dict:
    return schema_spec(SCHEMA)


def main() -> None:
    # the engine checks how options combine, so its messages are the same as on the command line
    module = AnsibleModule(**module_kwargs(SCHEMA), supports_check_mode=True)
    try:
        values = normalise(module.params)
        result = run_autosnap(to_config(values), LocalRunner(), check_mode=module.check_mode, diff=module._diff,
                              zfs_path=values['zfs_path'], lock_dir=values['lock_dir'],
                              lock_timeout=values['lock_timeout'])
    except (ValidationError, LockTimeout) as exc:
        module.fail_json(msg=str(exc))
    except ZfsCommandError as exc:
        module.fail_json(msg=str(exc), **exc.as_dict())
    for warning in result.pop('warnings'):
        module.warn(warning)
    if result.pop('failed', False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
