#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: systemd_units
short_description: Enable and start, restart, or stop and disable a set of systemd units in one module run
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Ensures that every unit of O(started) is enabled and active, restarting the active ones when O(restart) is set,
    and that every unit of O(stopped) is inactive and disabled; reloads the service manager first when
    O(daemon_reload) is set.
  - Meant for the roles of this collection, which install one timer per snapshot label, per pulled client and per
    retained client. M(ansible.builtin.systemd_service) handles one unit per run, and each C(systemctl enable) or
    C(disable) it runs reloads the manager once more; this module looks at all units in one C(systemctl show),
    then runs one C(systemctl) per kind of change, so a host with many timers costs a handful of commands.
  - A unit of O(started) that systemd does not know (no unit file) fails the run before anything is changed; in check
    mode it would be enabled and started, as its unit file may be one that a task before would have written.
    A unit of O(stopped) that systemd does not know has nothing to stop.
options:
  started:
    description:
      - Units to enable and start; those already enabled and active are left alone (see O(restart)).
    type: list
    elements: str
    default: []
  restart:
    description:
      - Restart the units of O(started) that are already active, e.g. because their unit files changed (a running
        timer keeps its old schedule until it is restarted).
    type: bool
    default: false
  stopped:
    description:
      - Units to stop and disable. A unit cannot be in both O(started) and O(stopped).
      - A unit enabled for this boot only (C(systemctl enable --runtime)) is stopped and left so.
    type: list
    elements: str
    default: []
  daemon_reload:
    description:
      - Run C(systemctl daemon-reload) before looking at the units, so that changed unit files take effect.
      - The reload alone does not count as a change.
    type: bool
    default: false
notes:
  - Unit names are taken verbatim; give the full name with its suffix, such as V(pyzfsautosnap-replicate.timer).
attributes:
  check_mode:
    support: full
    description: Reports what would be enabled, started, restarted, stopped and disabled, and changes nothing (not even the
      reload).
  diff_mode:
    support: none
    description: Reports no diff; the lists it returns name what changes.
  platform:
    support: full
    platforms: posix
    description: Needs systemd as the service manager.
'''

EXAMPLES = r'''
- name: Start the timers of every label, restarted when their units changed, and stop the others
  pyzfsautosnap.zfs.systemd_units:
    daemon_reload: "{{ units is changed }}"
    restart: "{{ units is changed }}"
    started:
      - pyzfsautosnap-autosnap@daily.timer
      - pyzfsautosnap-autosnap@weekly.timer
    stopped:
      - pyzfsautosnap-autosnap@hourly.timer
  register: timers

- name: Show what was started
  ansible.builtin.debug:
    msg: "{{ timers.started + timers.restarted }}"
'''

RETURN = r'''
enabled:
  description: Units of O(started) that were enabled (in check mode, that would be), in the order given.
  returned: always
  type: list
  elements: str
  sample: [pyzfsautosnap-autosnap@daily.timer]
started:
  description: Units of O(started) that were started because they were not active.
  returned: always
  type: list
  elements: str
  sample: [pyzfsautosnap-autosnap@daily.timer]
restarted:
  description: Units of O(started) that were active and restarted because of O(restart).
  returned: always
  type: list
  elements: str
  sample: [pyzfsautosnap-autosnap@weekly.timer]
stopped:
  description: Units of O(stopped) that were active and stopped.
  returned: always
  type: list
  elements: str
  sample: [pyzfsautosnap-autosnap@hourly.timer]
disabled:
  description: Units of O(stopped) that were enabled and disabled.
  returned: always
  type: list
  elements: str
  sample: [pyzfsautosnap-autosnap@hourly.timer]
'''

import dataclasses
import typing as t

from ansible.module_utils.basic import AnsibleModule

# what `systemctl show` is asked for, per unit
PROPERTIES = ('Id', 'LoadState', 'ActiveState', 'UnitFileState')
# a unit counts as running while it is in these states (a stop or restart then does something)
RUNNING = frozenset({'active', 'activating', 'reloading', 'refreshing'})
# enabled for good, or for this boot only (enabled-runtime): `systemctl enable` leaves both alone
ENABLED = frozenset({'enabled', 'enabled-runtime'})
# unit files that `systemctl enable` cannot change: they are started all the same
NOT_ENABLEABLE = frozenset({'static', 'indirect', 'generated', 'transient', 'alias'})


class PlanError(Exception):
    """Input that cannot be applied; raised before anything is changed."""


@dataclasses.dataclass(frozen=True)
class UnitState:
    load: str
    active: str
    file: str

    @property
    def known(self) -> bool:
        return self.load not in ('not-found', '')


@dataclasses.dataclass
class Plan:
    enable: list[str] = dataclasses.field(default_factory=list)
    start: list[str] = dataclasses.field(default_factory=list)
    restart: list[str] = dataclasses.field(default_factory=list)
    stop: list[str] = dataclasses.field(default_factory=list)
    disable: list[str] = dataclasses.field(default_factory=list)

    @property
    def changes(self) -> bool:
        return any((self.enable, self.start, self.restart, self.stop, self.disable))

    def result(self) -> dict[str, t.Any]:
        return {'changed': self.changes, 'enabled': self.enable, 'started': self.start, 'restarted': self.restart,
                'stopped': self.stop, 'disabled': self.disable}

    def commands(self) -> list[list[str]]:
        """The systemctl verbs and units to run, stopping before starting and disabling before enabling."""
        steps = (('stop', self.stop), ('disable', self.disable), ('enable', self.enable), ('start', self.start),
                 ('restart', self.restart))
        return [[verb, '--', *units] for verb, units in steps if units]


def check_units(started: t.Sequence[str], stopped: t.Sequence[str]) -> None:
    for option, units in (('started', started), ('stopped', stopped)):
        for unit in units:
            if not unit or unit != unit.strip() or unit.startswith('-') or '/' in unit:
                raise PlanError(f'{option}: {unit!r} is not a unit name')
        if len(set(units)) != len(units):
            raise PlanError(f'{option} names a unit more than once')
    both = sorted(set(started) & set(stopped))
    if both:
        raise PlanError(f'units cannot be both started and stopped: {", ".join(both)}')


def parse_show(output: str, units: t.Sequence[str]) -> dict[str, UnitState]:
    """Per unit, in the order asked: ``systemctl show`` prints one block per unit, blocks split by a blank line."""
    blocks: list[dict[str, str]] = []
    for chunk in output.strip('\n').split('\n\n'):
        values = dict(line.split('=', 1) for line in chunk.splitlines() if '=' in line)
        if values:
            blocks.append(values)
    if len(blocks) != len(units):
        raise PlanError(f'systemctl show answered {len(blocks)} block(s) for {len(units)} unit(s): {output!r}')
    return {unit: UnitState(b.get('LoadState', ''), b.get('ActiveState', ''), b.get('UnitFileState', ''))
            for unit, b in zip(units, blocks)}


def plan(started: t.Sequence[str], stopped: t.Sequence[str], restart: bool, states: t.Mapping[str, UnitState],
         check_mode: bool = False) -> Plan:
    unknown = [u for u in started if not states[u].known]
    if unknown and not check_mode:
        raise PlanError(f'systemd knows no unit {", ".join(unknown)} (is its unit file installed?)')
    chosen = Plan()
    for unit in started:
        state = states[unit]
        if state.file not in ENABLED and state.file not in NOT_ENABLEABLE:
            chosen.enable.append(unit)
        if state.active not in RUNNING:
            chosen.start.append(unit)
        elif restart:
            chosen.restart.append(unit)
    for unit in stopped:
        state = states[unit]
        if not state.known:
            continue
        if state.active in RUNNING:
            chosen.stop.append(unit)
        # a plain `systemctl disable` leaves an enablement for this boot only (enabled-runtime) alone
        if state.file == 'enabled':
            chosen.disable.append(unit)
    return chosen


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            'started': {'type': 'list', 'elements': 'str', 'default': []},
            'restart': {'type': 'bool', 'default': False},
            'stopped': {'type': 'list', 'elements': 'str', 'default': []},
            'daemon_reload': {'type': 'bool', 'default': False},
        },
        supports_check_mode=True,
    )
    started, stopped = list(module.params['started']), list(module.params['stopped'])
    try:
        check_units(started, stopped)
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    systemctl = module.get_bin_path('systemctl', required=True)

    def run(argv: list[str]) -> str:
        rc, out, err = module.run_command([systemctl, *argv])
        if rc != 0:
            module.fail_json(msg=f'systemctl {" ".join(argv)} failed: {err.strip() or out.strip()}', rc=rc,
                             cmd=[systemctl, *argv], stdout=out, stderr=err)
        return out

    if module.params['daemon_reload'] and not module.check_mode:
        run(['daemon-reload'])
    units = started + stopped
    if not units:
        module.exit_json(**Plan().result())
    try:
        chosen = plan(started, stopped, module.params['restart'],
                      parse_show(run(['show', f'--property={",".join(PROPERTIES)}', '--', *units]), units),
                      module.check_mode)
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    if not module.check_mode:
        for argv in chosen.commands():
            run(argv)
    module.exit_json(**chosen.result())


if __name__ == '__main__':
    main()
