# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Guest side of the test bed: caches the bytecode of modules imported from zip files.

Every Ansible task ships its module and module_utils as a zip, and Python never caches bytecode for
zip imports, so each task compiles ``ansible.module_utils.basic`` and the engine again: under TCG that
is about 2 of the 4.5 seconds a task costs. The code object is cached by the hash of its source (the
same source compiles to the same code) and given the path of the zip it is imported from now.
Loaded by a ``.pth`` file the test bed installs into each guest it boots; the collection never uses it.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import zipimport

CACHE_DIR = '/var/cache/testbed-zipimport'
_compile = zipimport._compile_source  # type: ignore[attr-defined]  # pylint: disable=protected-access


def _with_filename(code, filename):
    consts = tuple(_with_filename(c, filename) if hasattr(c, 'co_code') else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _compile_source(pathname, source):
    path = os.path.join(CACHE_DIR, hashlib.sha256(source).hexdigest())
    try:
        with open(path, 'rb') as fh:
            return _with_filename(marshal.loads(fh.read()), pathname)
    except (OSError, ValueError, EOFError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f'{path}.{os.getpid()}'
        with open(tmp, 'wb') as fh:
            fh.write(marshal.dumps(code))
        os.replace(tmp, path)
    except OSError:
        pass
    return code


zipimport._compile_source = _compile_source  # type: ignore[attr-defined]  # pylint: disable=protected-access
