# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Picks the transport for a host: local, OpenSSH or paramiko.

Apart from ``_transport`` so the implementations can import the shared
pieces there without that module importing them back.
"""

from __future__ import annotations

import shutil

from . import _transport_paramiko
from ._transport import TRANSPORTS, SshOptions, Transport, validate_host, validate_ssh_options
from ._transport_local import LocalTransport
from ._transport_openssh import OpenSshTransport
from ._types import ValidationError


def make_transport(host: str | None, kind: str = 'auto', options: SshOptions | None = None) -> Transport:
    """Local transport without a host; otherwise OpenSSH where the binary exists, paramiko if not."""
    if host is None:
        return LocalTransport()
    validate_host(host)
    options = validate_ssh_options(options or SshOptions())
    if kind not in TRANSPORTS:
        raise ValidationError(f'transport must be one of {", ".join(TRANSPORTS)}, got {kind!r}')
    if kind == 'auto':
        kind = 'openssh' if shutil.which('ssh') else 'paramiko'
    if kind == 'openssh':
        if not shutil.which('ssh'):
            raise ValidationError('transport openssh needs the ssh client binary, which is not on PATH')
        return OpenSshTransport(host, options)
    # looked up at call time: paramiko is optional, and tests switch it off
    if not _transport_paramiko.HAS_PARAMIKO:
        raise ValidationError('neither the ssh client binary nor the paramiko Python library is available')
    return _transport_paramiko.ParamikoTransport(host, options)
