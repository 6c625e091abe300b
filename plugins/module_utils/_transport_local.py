# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The host the engine runs on: commands run directly, stages are local processes."""

from __future__ import annotations

import typing as t

from ._transport import LocalSegment, Segment, Stage, Transport
from ._zfs import LocalRunner


class LocalTransport(Transport):
    kind = 'local'
    host = None

    def __init__(self, runner: LocalRunner | None = None) -> None:
        self._runner = runner or LocalRunner()

    def runner(self) -> LocalRunner:
        return self._runner

    def segment(self, stages: t.Sequence[Stage]) -> Segment:
        return LocalSegment(list(stages))
