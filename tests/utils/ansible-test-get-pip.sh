#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
# ansible-test bootstraps pip in its virtualenvs with a get-pip script downloaded from a
# host that may be unreachable. It uses a cached copy when one exists, so put a small
# stand-in there: it bootstraps pip with ensurepip, then lets pip install what was asked.
set -euo pipefail
python=$1
version=$("$python" - <<'PY'
import inspect, re
from ansible_test._internal import python_requirements as pr
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(pr.get_venv_packages)).group(1))
PY
)
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
cat > "$cache/get_pip_${version//./_}.py" <<'PY'
"""Local stand-in for get-pip.py: ensurepip, then pip install with the given arguments."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *args])
PY
echo "ansible-test get-pip stand-in: $cache/get_pip_${version//./_}.py" >&2
