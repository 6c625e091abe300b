# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""systemd_units against a fake systemctl that keeps unit states and answers `show` the way systemd 252 does."""

from __future__ import annotations

import typing as t

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pyzfsautosnap.zfs.plugins.modules import systemd_units

SYSTEMCTL = '/usr/bin/systemctl'


class Exited(Exception):
    """exit_json or fail_json was called; args[0] is the result."""


class FakeSystemd:
    def __init__(self, units: dict[str, tuple[str, str]], failing: str = '') -> None:
        # unit -> [ActiveState, UnitFileState]; a unit not listed has no unit file
        self.units = {name: list(state) for name, state in units.items()}
        self.failing = failing
        self.calls: list[list[str]] = []

    def run_command(self, argv: list[str], **_kwargs: t.Any) -> tuple[int, str, str]:
        assert argv[0] == SYSTEMCTL
        verb, names = argv[1], [a for a in argv[2:] if not a.startswith('-')]
        self.calls.append(argv[1:])
        if verb == self.failing:
            return 1, '', f'Failed to {verb} unit: Access denied'
        if verb == 'show':
            # systemd prints the properties in its own order, a block per unit
            blocks = []
            for name in names:
                active, state = self.units.get(name, ['inactive', ''])
                load = 'loaded' if name in self.units else 'not-found'
                blocks.append(f'Id={name}\nActiveState={active}\nLoadState={load}\nUnitFileState={state}\n')
            return 0, '\n'.join(blocks), ''
        for name in names:
            unit = self.units[name]
            if verb in ('start', 'restart'):
                unit[0] = 'active'
            elif verb == 'stop':
                unit[0] = 'inactive'
            elif verb in ('enable', 'disable'):
                unit[1] = verb + 'd'
        return 0, '', ''


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> t.Callable[..., FakeSystemd]:
    def make(units: dict[str, tuple[str, str]], failing: str = '') -> FakeSystemd:
        fake = FakeSystemd(units, failing)

        def leave(self: t.Any, msg: str = '', **result: t.Any) -> t.NoReturn:
            raise Exited({**result, **({'failed': True, 'msg': msg} if msg else {})})
        monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, argv, **kw: fake.run_command(argv, **kw))
        monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, **kw: SYSTEMCTL)
        monkeypatch.setattr(basic.AnsibleModule, 'exit_json', leave)
        monkeypatch.setattr(basic.AnsibleModule, 'fail_json', leave)
        return fake
    return make


def run(args: dict[str, t.Any]) -> dict[str, t.Any]:
    with patch_module_args(args):
        with pytest.raises(Exited) as info:
            systemd_units.main()
    return info.value.args[0]


DAILY = 'pas@daily.timer'
WEEKLY = 'pas@weekly.timer'
HOURLY = 'pas@hourly.timer'


def test_a_first_run_enables_and_starts_all_at_once_and_a_second_changes_nothing(systemd: t.Any) -> None:
    fake = systemd({DAILY: ('inactive', 'disabled'), WEEKLY: ('inactive', 'disabled')})
    first = run({'started': [DAILY, WEEKLY], 'daemon_reload': True, 'restart': True})
    assert first['changed'] is True
    assert first['enabled'] == first['started'] == [DAILY, WEEKLY] and first['restarted'] == []
    assert fake.calls == [['daemon-reload'], ['show', '--property=Id,LoadState,ActiveState,UnitFileState', '--', DAILY, WEEKLY],
                          ['enable', '--', DAILY, WEEKLY], ['start', '--', DAILY, WEEKLY]]
    fake.calls.clear()
    second = run({'started': [DAILY, WEEKLY]})
    assert second['changed'] is False and not any(second[k] for k in ('enabled', 'started', 'restarted', 'stopped', 'disabled'))
    assert [c[0] for c in fake.calls] == ['show']


@pytest.mark.parametrize('case,before,args,expected', [
    # a changed unit file: active timers restart, a stopped one starts
    ('restart', {DAILY: ('active', 'enabled'), WEEKLY: ('inactive', 'enabled')},
     {'started': [DAILY, WEEKLY], 'restart': True}, {'started': [WEEKLY], 'restarted': [DAILY]}),
    # enabled but stopped by hand: started again, not enabled again
    ('stopped by hand', {DAILY: ('inactive', 'enabled')}, {'started': [DAILY]}, {'started': [DAILY]}),
    # running but not enabled: enabled, not started again
    ('not enabled', {DAILY: ('active', 'disabled')}, {'started': [DAILY]}, {'enabled': [DAILY]}),
    # a static unit cannot be enabled; it is only started
    ('static', {DAILY: ('inactive', 'static')}, {'started': [DAILY]}, {'started': [DAILY]}),
    ('stop and disable', {HOURLY: ('active', 'enabled')}, {'stopped': [HOURLY]}, {'stopped': [HOURLY], 'disabled': [HOURLY]}),
    ('disabled already', {HOURLY: ('inactive', 'disabled')}, {'stopped': [HOURLY]}, {}),
    # enabled for this boot only: a plain disable would change nothing, so none is run
    ('runtime', {HOURLY: ('active', 'enabled-runtime')}, {'stopped': [HOURLY]}, {'stopped': [HOURLY]}),
    # a unit whose file is gone has nothing left to stop
    ('unknown stopped', {}, {'stopped': [HOURLY]}, {}),
    ('nothing', {}, {}, {}),
])
def test_only_what_differs_is_done(systemd: t.Any, case: str, before: dict[str, tuple[str, str]], args: dict[str, t.Any],
                                   expected: dict[str, list[str]]) -> None:
    fake = systemd(before)
    result = run(args)
    for key in ('enabled', 'started', 'restarted', 'stopped', 'disabled'):
        assert result[key] == expected.get(key, []), (case, key)
    assert result['changed'] is bool(expected), case
    # one systemctl per kind of change, none for what needs nothing
    assert [c[0] for c in fake.calls if c[0] != 'show'] == \
        [verb for verb, key in (('stop', 'stopped'), ('disable', 'disabled'), ('enable', 'enabled'), ('start', 'started'),
                                ('restart', 'restarted')) if expected.get(key)], case
    for unit, (active, _state) in before.items():
        wanted_running = unit in args.get('started', []) or (active == 'active' and unit not in args.get('stopped', []))
        assert (fake.units[unit][0] == 'active') is wanted_running, (case, unit)


def test_check_mode_reports_the_plan_and_runs_nothing_but_show(systemd: t.Any) -> None:
    fake = systemd({DAILY: ('active', 'enabled'), HOURLY: ('active', 'enabled')})
    result = run({'started': [DAILY, WEEKLY], 'stopped': [HOURLY], 'restart': True, 'daemon_reload': True,
                  '_ansible_check_mode': True})
    # the weekly timer's unit file would have been written by the task before: it would be enabled and started
    assert (result['enabled'], result['started'], result['restarted']) == ([WEEKLY], [WEEKLY], [DAILY])
    assert (result['stopped'], result['disabled']) == ([HOURLY], [HOURLY])
    assert result['changed'] is True
    assert [c[0] for c in fake.calls] == ['show']
    assert fake.units == {DAILY: ['active', 'enabled'], HOURLY: ['active', 'enabled']}


@pytest.mark.parametrize('args,message', [
    ({'started': [DAILY, DAILY]}, 'started names a unit more than once'),
    ({'started': [DAILY], 'stopped': [DAILY]}, f'both started and stopped: {DAILY}'),
    ({'started': ['--now']}, "'--now' is not a unit name"),
    ({'stopped': ['']}, "stopped: '' is not a unit name"),
    ({'started': ['../x.timer']}, 'is not a unit name'),
    ({'started': [DAILY, WEEKLY]}, f'systemd knows no unit {WEEKLY}'),
])
def test_bad_input_and_unknown_units_fail_before_any_change(systemd: t.Any, args: dict[str, t.Any], message: str) -> None:
    fake = systemd({DAILY: ('inactive', 'disabled')})
    result = run(args)
    assert result['failed'] is True and message in result['msg'], result
    assert [c[0] for c in fake.calls] in ([], ['show'])


def test_a_failing_systemctl_fails_loudly_with_its_message(systemd: t.Any) -> None:
    systemd({DAILY: ('inactive', 'disabled')}, failing='enable')
    result = run({'started': [DAILY]})
    assert result['failed'] is True and result['rc'] == 1
    assert result['msg'] == f'systemctl enable -- {DAILY} failed: Failed to enable unit: Access denied'


def test_show_output_with_a_missing_block_is_refused() -> None:
    with pytest.raises(systemd_units.PlanError, match='1 block'):
        systemd_units.parse_show('Id=a.timer\nLoadState=loaded\n', ['a.timer', 'b.timer'])
