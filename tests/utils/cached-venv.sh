#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
# A virtualenv with the pinned requirements, built once per content hash in a cache directory and linked into
# the clone, so every clone on the machine shares it. A half-built one (interrupted install) is built again.
#
#   tests/utils/cached-venv.sh PYTHON CACHED_DIR LINK REQUIREMENTS
set -euo pipefail
python=$1 cached=$2 link=$3 requirements=$4
mkdir -p "$(dirname "$cached")"
exec 9>"$cached.lock"
flock 9
if [ ! -e "$cached/.complete" ]; then
  rm -rf "$cached"
  "$python" -m venv "$cached"
  "$cached/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  touch "$cached/.complete"
fi
# a .venv of an older layout is a directory: replace it by the link
if [ -d "$link" ] && [ ! -L "$link" ]; then
  rm -rf "$link"
fi
ln -sfn "$cached" "$link"
