# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Plain data shared by the engine's deciding and acting halves.

Nothing here imports from ``ansible`` so that the engine also runs from a bare
Python entry point on hosts without Ansible.
"""

from __future__ import annotations

import dataclasses
import typing as t


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One snapshot or bookmark as listed by ``zfs list -Hp``."""

    dataset: str
    name: str
    guid: int
    createtxg: int
    creation: int
    userrefs: int = 0
    clones: tuple[str, ...] = ()
    is_bookmark: bool = False

    @property
    def full_name(self) -> str:
        sep = '#' if self.is_bookmark else '@'
        return f'{self.dataset}{sep}{self.name}'

    @property
    def held(self) -> bool:
        return self.userrefs > 0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One filesystem or volume with the properties the engine decides on."""

    name: str
    type: str = 'filesystem'
    # effective (possibly inherited) values of the user properties asked for; '-' when unset
    properties: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    written: int | None = None
    receive_resume_token: str | None = None
    # why its user property values could not be read (a tab in a value); such a dataset is not snapshotted
    unreadable: str | None = None
    # `zfs get` SOURCE of some of those properties ('local', 'inherited from tank', ...); only asked for when needed
    sources: t.Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Features:
    """What this zfs CLI can do; legacy dialects (Solaris-era, zfs-fuse) lack most of it."""

    version: str | None = None
    parsable_list: bool = True
    multi_snapshot: bool = True
    bookmarks: bool = True
    resume: bool = True

    @property
    def legacy(self) -> bool:
        return not (self.parsable_list and self.multi_snapshot)


class ZfsCommandError(Exception):
    """A zfs (or pipeline stage) command failed; carries what a human needs to debug it."""

    def __init__(self, cmd: t.Sequence[str], rc: int, stdout: str = '', stderr: str = '', stage: str = 'zfs') -> None:
        self.cmd = list(cmd)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.stage = stage
        super().__init__(f'{stage} command failed (rc={rc}): {" ".join(self.cmd)}: {stderr.strip()}')

    def as_dict(self) -> dict[str, t.Any]:
        return {'cmd': self.cmd, 'rc': self.rc, 'stdout': self.stdout, 'stderr': self.stderr, 'stage': self.stage}


class ValidationError(ValueError):
    """Bad input, detected before anything is changed."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop every stage, keep resumable state, report what was being done.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        # the dataset being replicated when the signal came, for the interrupted result
        self.dataset: str | None = None
        super().__init__(f'interrupted by signal {signum}')
