# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import stat
import typing as t

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pyzfsautosnap.zfs.plugins.modules import install_files


class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def exit_json(self: t.Any, **kwargs: t.Any) -> t.NoReturn:
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def fail_json(self: t.Any, msg: str, **kwargs: t.Any) -> t.NoReturn:
    kwargs.update(failed=True, msg=msg)
    raise AnsibleFailJson(kwargs)


@pytest.fixture(autouse=True)
def module_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)


def run(args: dict[str, t.Any]) -> dict[str, t.Any]:
    with patch_module_args(args):
        with pytest.raises(AnsibleExitJson) as info:
            install_files.main()
    return info.value.args[0]


def fail(args: dict[str, t.Any]) -> dict[str, t.Any]:
    with patch_module_args(args):
        with pytest.raises(AnsibleFailJson) as info:
            install_files.main()
    return info.value.args[0]


def tree(root: str) -> dict[str, tuple[str, int, bytes | None]]:
    """Everything below *root*: relative path -> (kind, mode, content)."""
    seen: dict[str, tuple[str, int, bytes | None]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = ('link', 0, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = ('dir', stat.S_IMODE(st.st_mode), None)
            else:
                with open(path, 'rb') as fh:
                    seen[rel] = ('file', stat.S_IMODE(st.st_mode), fh.read())
    return seen


def write(path: str, content: str, mode: int = 0o644) -> None:
    with open(path, 'w', encoding='utf-8') as fh:
        fh.write(content)
    os.chmod(path, mode)


def test_a_first_run_creates_everything_and_a_second_changes_nothing(tmp_path: t.Any) -> None:
    root = str(tmp_path)
    args = {
        'directories': [f'{root}/etc/sub', f'{root}/etc'],  # parents are created first, in any order given
        'directory_mode': '0750',
        'files': [{'path': f'{root}/etc/sub/b.json', 'content': '{"b": 1}\n', 'mode': '0600'},
                  {'path': f'{root}/etc/a.service', 'content': '[Unit]\nDescription=ä\n'},
                  {'path': f'{root}/top', 'content': '', 'mode': 0o755}],
    }
    first = run(args)
    assert first['changed'] is True
    assert first['directories'] == [f'{root}/etc', f'{root}/etc/sub']
    assert first['written'] == [f'{root}/etc/a.service', f'{root}/etc/sub/b.json', f'{root}/top']
    assert first['fixed'] == [] and first['removed'] == []
    assert tree(root) == {
        'etc': ('dir', 0o750, None),
        'etc/sub': ('dir', 0o750, None),
        'etc/sub/b.json': ('file', 0o600, b'{"b": 1}\n'),
        'etc/a.service': ('file', 0o644, '[Unit]\nDescription=ä\n'.encode()),
        'top': ('file', 0o755, b''),
    }
    second = run(args)
    assert second == {'changed': False, 'written': [], 'fixed': [], 'removed': [], 'directories': []}


@pytest.mark.parametrize('case, before, after, outcome', [
    ('content differs', ('old\n', 0o644), ('new\n', 0o644), 'written'),
    ('only the mode differs', ('same\n', 0o666), ('same\n', 0o644), 'fixed'),
    ('content and mode differ', ('old\n', 0o600), ('new\n', 0o644), 'written'),
    ('nothing differs', ('same\n', 0o644), ('same\n', 0o644), None),
])
def test_files_are_compared_by_content_and_mode(tmp_path: t.Any, case: str, before: tuple[str, int],
                                                after: tuple[str, int], outcome: str | None) -> None:
    written, fixed = outcome == 'written', outcome == 'fixed'
    path = str(tmp_path / 'f')
    write(path, *before)
    inode = os.stat(path).st_ino
    result = run({'files': [{'path': path, 'content': after[0], 'mode': f'{after[1]:04o}'}]})
    assert result['written'] == ([path] if written else [])
    assert result['fixed'] == ([path] if fixed else [])
    assert result['changed'] is (written or fixed)
    assert tree(str(tmp_path)) == {'f': ('file', after[1], after[0].encode())}
    # a content change replaces the file by rename; a mode fix keeps it
    assert (os.stat(path).st_ino != inode) is written


def test_a_symlink_where_a_file_is_wanted_is_replaced_not_followed(tmp_path: t.Any) -> None:
    write(str(tmp_path / 'elsewhere'), 'keep\n')
    os.symlink('elsewhere', tmp_path / 'f')
    result = run({'files': [{'path': str(tmp_path / 'f'), 'content': 'mine\n'}]})
    assert result['written'] == [str(tmp_path / 'f')]
    assert tree(str(tmp_path)) == {'elsewhere': ('file', 0o644, b'keep\n'), 'f': ('file', 0o644, b'mine\n')}


def test_stale_files_matching_the_patterns_are_removed_and_nothing_else(tmp_path: t.Any) -> None:
    root = str(tmp_path)
    for name in ('x@daily.timer', 'x@hourly.timer', 'x@.service', 'other.timer', 'x.json'):
        write(f'{root}/{name}', name)
    os.symlink('other.timer', f'{root}/x@weekly.timer')
    os.mkdir(f'{root}/x@dir.timer')  # directories are never removed
    result = run({
        'files': [{'path': f'{root}/x@daily.timer', 'content': 'x@daily.timer'}],
        'remove': [{'path': root, 'patterns': ['x@*.timer']}, {'path': root, 'patterns': ['*.json']},
                   {'path': f'{root}/missing', 'patterns': ['*']}],
    })
    assert result['removed'] == [f'{root}/x.json', f'{root}/x@hourly.timer', f'{root}/x@weekly.timer']
    assert result['written'] == [] and result['changed'] is True
    assert sorted(tree(root)) == ['other.timer', 'x@.service', 'x@daily.timer', 'x@dir.timer']


def test_check_mode_reports_the_same_plan_and_changes_nothing(tmp_path: t.Any) -> None:
    root = str(tmp_path)
    write(f'{root}/old.timer', 'old')
    write(f'{root}/keep', 'keep', 0o600)
    args = {'directories': [f'{root}/d'], 'files': [{'path': f'{root}/d/new', 'content': 'new'},
                                                    {'path': f'{root}/keep', 'content': 'keep'}],
            'remove': [{'path': root, 'patterns': ['*.timer']}]}
    before = tree(root)
    checked = run({**args, '_ansible_check_mode': True})
    assert tree(root) == before
    done = run(args)
    assert checked == done == {'changed': True, 'directories': [f'{root}/d'], 'written': [f'{root}/d/new'],
                               'fixed': [f'{root}/keep'], 'removed': [f'{root}/old.timer']}


def test_diff_mode_shows_old_and_new_content(tmp_path: t.Any) -> None:
    root = str(tmp_path)
    write(f'{root}/a', 'one\n')
    write(f'{root}/gone.timer', 'x')
    result = run({'files': [{'path': f'{root}/a', 'content': 'two\n'}, {'path': f'{root}/b', 'content': 'new\n'}],
                  'remove': [{'path': root, 'patterns': ['*.timer']}], '_ansible_diff': True})
    assert result['diff'] == [
        {'before_header': f'{root}/a', 'after_header': f'{root}/a', 'before': 'one\n', 'after': 'two\n'},
        {'before_header': '(absent)', 'after_header': f'{root}/b', 'before': '', 'after': 'new\n'},
        {'before_header': f'{root}/gone.timer', 'after_header': '(absent)', 'before': f'{root}/gone.timer\n', 'after': ''},
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason='changing owners needs root')
def test_owner_and_group_are_set_on_new_files_and_fixed_on_old_ones(tmp_path: t.Any) -> None:
    root = str(tmp_path)
    write(f'{root}/old', 'same')
    args = {'owner': 'nobody', 'group': '65534', 'directories': [f'{root}/d'],
            'files': [{'path': f'{root}/old', 'content': 'same'}, {'path': f'{root}/d/new', 'content': 'new', 'mode': '0600'}]}
    result = run(args)
    assert result['fixed'] == [f'{root}/old'] and result['written'] == [f'{root}/d/new']
    nobody = install_files.resolve_user('nobody')
    for path in (f'{root}/old', f'{root}/d', f'{root}/d/new'):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (nobody, 65534), path
    assert run(args)['changed'] is False


@pytest.mark.parametrize('case, args, message', [
    ('relative file', lambda r: {'files': [{'path': 'etc/a', 'content': ''}]}, "file 'etc/a' is not an absolute path"),
    ('relative directory', lambda r: {'directories': ['etc']}, "directory 'etc' is not an absolute path"),
    ('file twice', lambda r: {'files': [{'path': f'{r}/a', 'content': '1'}, {'path': f'{r}/a', 'content': '2'}]},
     'more than once'),
    ('file and directory', lambda r: {'directories': [f'{r}/a'], 'files': [{'path': f'{r}/a', 'content': ''}]},
     'both as a file and as a directory'),
    ('file is a directory', lambda r: {'files': [{'path': f'{r}/dir', 'content': ''}]}, 'the path is a directory'),
    ('directory is a file', lambda r: {'directories': [f'{r}/file']}, 'exists and is not a directory'),
    ('no parent', lambda r: {'files': [{'path': f'{r}/no/a', 'content': ''}]}, 'does not exist and is not in directories'),
    ('no parent of a directory', lambda r: {'directories': [f'{r}/no/d']}, 'does not exist and is not in directories'),
    ('empty patterns', lambda r: {'remove': [{'path': r, 'patterns': []}]}, 'patterns for'),
    ('pattern with a slash', lambda r: {'remove': [{'path': r, 'patterns': ['../*']}]}, 'must be file names'),
    ('relative removal', lambda r: {'remove': [{'path': 'etc', 'patterns': ['*']}]}, "'etc' is not an absolute path"),
    ('symbolic mode', lambda r: {'files': [{'path': f'{r}/a', 'content': '', 'mode': 'u=rw'}]}, 'octal string'),
    ('mode out of range', lambda r: {'directory_mode': 0o17777}, 'out of range'),
    ('unknown owner', lambda r: {'owner': 'no-such-user-here'}, 'no such user'),
    ('unknown group', lambda r: {'group': 'no-such-group-here'}, 'no such group'),
])
def test_bad_input_fails_before_anything_changes(tmp_path: t.Any, case: str,
                                                 args: t.Callable[[str], dict[str, t.Any]], message: str) -> None:
    root = str(tmp_path)
    os.mkdir(f'{root}/dir')
    write(f'{root}/file', 'x')
    write(f'{root}/stale.timer', 'x')
    # each bad input comes with valid work that must not be done either
    given = args(root)
    given.setdefault('files', []).append({'path': f'{root}/new', 'content': 'new'})
    given.setdefault('remove', []).append({'path': root, 'patterns': ['*.timer']})
    before = tree(root)
    result = fail(given)
    assert message in result['msg'], result['msg']
    assert tree(root) == before


def test_a_failed_write_leaves_no_temporary_file(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    write(f'{root}/a', 'old')

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, 'Permission denied', dst)

    monkeypatch.setattr(install_files.os, 'rename', refuse)
    result = fail({'files': [{'path': f'{root}/a', 'content': 'new'}]})
    assert result['msg'] == f'{root}/a: Permission denied'
    assert result['written'] == [f'{root}/a']
    assert tree(root) == {'a': ('file', 0o644, b'old')}
