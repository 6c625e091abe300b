#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: install_files
short_description: Install a set of small text files and their directories in one module run
version_added: 0.1.0
author: pyzfsautosnap contributors (@pyzfsautosnap)
description:
  - Ensures that each file of O(files) exists with the given content, mode, owner and group, that each directory of
    O(directories) exists with O(directory_mode), owner and group, and removes the files that O(remove) names and
    O(files) does not list.
  - Meant for the roles of this collection, which install the engine, its systemd units and settings; one run of
    this module replaces one M(ansible.builtin.copy) or M(ansible.builtin.template) task per file, and so one round
    trip to the host per file.
  - Files are compared by content, mode, owner and group. A file whose content differs is replaced atomically (written
    to a temporary file in the same directory, synced, renamed over the old one), so a reader never sees a partial
    file. A file whose content is right but whose mode or ownership is not is only fixed in place.
  - Everything is checked before anything is changed; a path that is a directory where a file is wanted, a missing
    parent directory or an unknown user fail the run with nothing changed.
  - Removal never touches directories, and never a path listed in O(files).
options:
  files:
    description:
      - The files to install. Their paths must be absolute and distinct.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description:
          - Absolute path of the file. Its parent directory must exist or be listed in O(directories).
        type: path
        required: true
      content:
        description:
          - The whole content of the file, written as UTF-8.
        type: str
        required: true
      mode:
        description:
          - Permissions as an octal string such as V('0644'), or an integer.
        type: raw
        default: '0644'
  directories:
    description:
      - Directories to create or fix, each with O(directory_mode), O(owner) and O(group).
      - A directory's parent must exist or be listed too; parents are created first.
    type: list
    elements: path
    default: []
  directory_mode:
    description:
      - Permissions of the directories of O(directories), as for O(files[].mode).
    type: raw
    default: '0755'
  owner:
    description:
      - User name or uid that owns every file and directory this module installs.
      - Unset, new files belong to the user the module runs as, and the owner of existing ones is left alone.
    type: str
  group:
    description:
      - Group name or gid of every file and directory this module installs; unset, as for O(owner).
    type: str
  remove:
    description:
      - Stale files to remove. In each directory O(remove[].path) (not below it), every file or symbolic link whose
        name matches one of O(remove[].patterns) and that is not listed in O(files) is removed.
      - A directory that does not exist has nothing to remove.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description:
          - Absolute path of the directory to look in.
        type: path
        required: true
      patterns:
        description:
          - Shell-style patterns (C(fnmatch), case-sensitive) matched against the file names.
          - Must not be empty, and a pattern cannot contain C(/).
        type: list
        elements: str
        required: true
notes:
  - Files are text. Secret content should be given with C(no_log) on the task, as for any module.
attributes:
  check_mode:
    support: full
    description: Reports what would be written, fixed and removed, and changes nothing.
  diff_mode:
    support: full
    description: Returns the old and new content of every file whose content changes.
  platform:
    support: full
    platforms: posix
    description: Uses POSIX owners, modes and atomic rename.
'''

EXAMPLES = r'''
- name: Install a service and its timer, removing timers of labels no longer wanted
  pyzfsautosnap.zfs.install_files:
    owner: root
    group: root
    directories:
      - /etc/pyzfsautosnap
    files:
      - path: /etc/systemd/system/pyzfsautosnap-autosnap@.service
        content: "{{ lookup('ansible.builtin.template', 'pyzfsautosnap-autosnap@.service.j2') }}"
      - path: /etc/pyzfsautosnap/autosnap-daily.json
        content: "{{ {'args': ['autosnap', '--label=daily']} | to_json }}"
        mode: '0600'
    remove:
      - path: /etc/systemd/system
        patterns:
          - pyzfsautosnap-autosnap@*.timer
  register: units
  notify: Reload systemd

- name: Show what changed
  ansible.builtin.debug:
    msg: "{{ units.written + units.fixed + units.removed }}"
'''

RETURN = r'''
written:
  description: Files created or whose content was replaced (in check mode, that would be), sorted.
  returned: always
  type: list
  elements: str
  sample: [/etc/pyzfsautosnap/autosnap-daily.json]
fixed:
  description: Files whose content was right and whose mode, owner or group was fixed, sorted.
  returned: always
  type: list
  elements: str
  sample: []
removed:
  description: Files removed by O(remove), sorted.
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/pyzfsautosnap-autosnap@hourly.timer]
directories:
  description: Directories created or whose mode, owner or group was fixed, sorted.
  returned: always
  type: list
  elements: str
  sample: [/etc/pyzfsautosnap]
'''

import dataclasses
import fnmatch
import grp
import os
import pwd
import stat
import tempfile
import typing as t

from ansible.module_utils.basic import AnsibleModule

Kind = t.Literal['absent', 'file', 'link', 'directory', 'other']


class PlanError(Exception):
    """Input that cannot be installed; raised before anything is changed."""


@dataclasses.dataclass(frozen=True)
class Observed:
    """What is at a path now."""

    kind: Kind
    mode: int = 0
    uid: int = -1
    gid: int = -1
    content: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Wanted:
    path: str
    content: bytes
    mode: int


@dataclasses.dataclass(frozen=True)
class Desired:
    """The module's options, checked and resolved."""

    files: tuple[Wanted, ...]
    directories: tuple[str, ...]
    directory_mode: int
    uid: int | None
    gid: int | None
    stale: tuple[tuple[str, tuple[str, ...]], ...]  # (directory, patterns) of remove

    def file(self, path: str) -> Wanted:
        return next(f for f in self.files if f.path == path)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The whole run as data: what to create or fix, in the order it is done."""

    directories: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.directories or self.written or self.fixed or self.removed)


def parse_mode(value: t.Any, what: str) -> int:
    if isinstance(value, bool):
        raise PlanError(f'{what}: mode must be an octal string such as "0644", not {value!r}')
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and value and all(c in '01234567' for c in value):
        mode = int(value, 8)
    else:
        raise PlanError(f'{what}: mode must be an octal string such as "0644", not {value!r}')
    if not 0 <= mode <= 0o7777:
        raise PlanError(f'{what}: mode {value!r} is out of range')
    return mode


def _resolve(name: str | None, by_name: t.Callable[[str], int], option: str, noun: str) -> int | None:
    if name is None or name == '':
        return None
    if name.isdigit():
        return int(name)
    try:
        return by_name(name)
    except KeyError:
        raise PlanError(f'{option} {name!r}: no such {noun}') from None


def resolve_user(name: str | None) -> int | None:
    return _resolve(name, lambda n: pwd.getpwnam(n).pw_uid, 'owner', 'user')


def resolve_group(name: str | None) -> int | None:
    return _resolve(name, lambda n: grp.getgrnam(n).gr_gid, 'group', 'group')


def observe(path: str, read: bool) -> Observed:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Observed('absent')
    if stat.S_ISDIR(st.st_mode):
        return Observed('directory', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        return Observed('link', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if not stat.S_ISREG(st.st_mode):
        return Observed('other', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    content = None
    if read:
        with open(path, 'rb') as fh:
            content = fh.read()
    return Observed('file', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)


def _attributes_differ(seen: Observed, mode: int, uid: int | None, gid: int | None) -> bool:
    return seen.mode != mode or (uid is not None and seen.uid != uid) or (gid is not None and seen.gid != gid)


def plan(desired: Desired, look: t.Callable[[str, bool], Observed], names_in: t.Callable[[str], t.Sequence[str]]) -> Plan:
    """Decide everything from what *look* and *names_in* report; changes nothing."""
    files, directories, directory_mode = desired.files, desired.directories, desired.directory_mode
    uid, gid, stale = desired.uid, desired.gid, desired.stale
    wanted_dirs = sorted(set(directories), key=lambda p: (p.count('/'), p))
    for path in wanted_dirs:
        if not os.path.isabs(path):
            raise PlanError(f'directory {path!r} is not an absolute path')
    paths = [f.path for f in files]
    for path in paths:
        if not os.path.isabs(path):
            raise PlanError(f'file {path!r} is not an absolute path')
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise PlanError(f'files lists {", ".join(duplicates)} more than once')
    both = sorted(set(paths) & set(wanted_dirs))
    if both:
        raise PlanError(f'{", ".join(both)} is listed both as a file and as a directory')

    will_exist = set(wanted_dirs)
    dirs: list[str] = []
    for path in wanted_dirs:
        seen = look(path, False)
        parent = os.path.dirname(path)
        if seen.kind == 'absent':
            if parent not in will_exist and look(parent, False).kind != 'directory':
                raise PlanError(f'directory {path}: its parent {parent} does not exist and is not in directories')
            dirs.append(path)
        elif seen.kind != 'directory':
            raise PlanError(f'directory {path}: the path exists and is not a directory')
        elif _attributes_differ(seen, directory_mode, uid, gid):
            dirs.append(path)

    written: list[str] = []
    fixed: list[str] = []
    for want in files:
        parent = os.path.dirname(want.path)
        if parent not in will_exist and look(parent, False).kind != 'directory':
            raise PlanError(f'file {want.path}: its directory {parent} does not exist and is not in directories')
        seen = look(want.path, True)
        if seen.kind == 'directory':
            raise PlanError(f'file {want.path}: the path is a directory')
        if seen.kind != 'file' or seen.content != want.content:
            written.append(want.path)
        elif _attributes_differ(seen, want.mode, uid, gid):
            fixed.append(want.path)

    removed: list[str] = []
    listed = set(paths)
    for directory, patterns in stale:
        if not os.path.isabs(directory):
            raise PlanError(f'remove: {directory!r} is not an absolute path')
        if not patterns:
            raise PlanError(f'remove: the patterns for {directory} are empty; give the names to remove')
        bad = [p for p in patterns if not p or '/' in p]
        if bad:
            raise PlanError(f'remove: patterns for {directory} must be file names, not {bad!r}')
        for name in names_in(directory):
            path = os.path.join(directory, name)
            if path in listed or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            if look(path, False).kind in ('file', 'link'):
                removed.append(path)
    return Plan(tuple(dirs), tuple(sorted(written)), tuple(sorted(fixed)), tuple(sorted(set(removed))))


def names_in(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def _set_attributes(path: str, mode: int, uid: int | None, gid: int | None) -> None:
    # through a descriptor opened without following links: a symlink swapped in since the plan
    # (e.g. by a user owning the parent directory) fails instead of redirecting the chmod
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _write(module: AnsibleModule, want: Wanted, uid: int | None, gid: int | None) -> None:
    directory = os.path.dirname(want.path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(want.path)}.', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(want.content)
            fh.flush()
            # owner and mode are right before the name appears, so a secret is never readable by others
            if uid is not None or gid is not None:
                os.fchown(fh.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fh.fileno(), want.mode)
            os.fsync(fh.fileno())
        if module.selinux_enabled():
            module.set_context_if_different(tmp, module.selinux_default_context(want.path), False)
        os.rename(tmp, want.path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def execute(module: AnsibleModule, chosen: Plan, desired: Desired) -> None:
    uid, gid = desired.uid, desired.gid
    for path in chosen.directories:
        if not os.path.isdir(path):
            os.mkdir(path, desired.directory_mode)
        _set_attributes(path, desired.directory_mode, uid, gid)
    for path in chosen.written:
        _write(module, desired.file(path), uid, gid)
    for path in chosen.fixed:
        _set_attributes(path, desired.file(path).mode, uid, gid)
    for path in chosen.removed:
        os.unlink(path)


def _diff(chosen: Plan, desired: Desired, look: t.Callable[[str, bool], Observed]) -> list[dict[str, str]]:
    diffs = []
    for path in chosen.written:
        before = look(path, True).content
        diffs.append({'before_header': path if before is not None else '(absent)', 'after_header': path,
                      'before': (before or b'').decode('utf-8', 'replace'),
                      'after': desired.file(path).content.decode('utf-8')})
    for path in chosen.removed:
        diffs.append({'before_header': path, 'after_header': '(absent)', 'before': f'{path}\n', 'after': ''})
    return diffs


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            'files': {'type': 'list', 'elements': 'dict', 'default': [], 'options': {
                'path': {'type': 'path', 'required': True},
                'content': {'type': 'str', 'required': True},
                'mode': {'type': 'raw', 'default': '0644'},
            }},
            'directories': {'type': 'list', 'elements': 'path', 'default': []},
            'directory_mode': {'type': 'raw', 'default': '0755'},
            'owner': {'type': 'str'},
            'group': {'type': 'str'},
            'remove': {'type': 'list', 'elements': 'dict', 'default': [], 'options': {
                'path': {'type': 'path', 'required': True},
                'patterns': {'type': 'list', 'elements': 'str', 'required': True},
            }},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        desired = Desired(
            files=tuple(Wanted(f['path'], f['content'].encode('utf-8'), parse_mode(f['mode'], f['path']))
                        for f in params['files']),
            directories=tuple(params['directories']),
            directory_mode=parse_mode(params['directory_mode'], 'directory_mode'),
            uid=resolve_user(params['owner']),
            gid=resolve_group(params['group']),
            stale=tuple((entry['path'], tuple(entry['patterns'])) for entry in params['remove']))
        chosen = plan(desired, observe, names_in)
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    result: dict[str, t.Any] = {
        'changed': chosen.changed, 'written': list(chosen.written), 'fixed': list(chosen.fixed),
        'removed': list(chosen.removed), 'directories': list(chosen.directories),
    }
    if module._diff:
        result['diff'] = _diff(chosen, desired, observe)
    if not module.check_mode:
        try:
            execute(module, chosen, desired)
        except OSError as exc:
            module.fail_json(msg=f'{exc.filename or ""}: {exc.strerror}', **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
