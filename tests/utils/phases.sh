#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
# Runs `make <phase>` for each phase in order, stops at the first failure, and always prints how long
# each phase took, so a slow or failing CI run shows where its time went.
#
#   tests/utils/phases.sh MAKE PHASE...
set -uo pipefail
make_cmd=$1
shift
names=() secs=() results=()
summary() {
  printf '\n%-28s %8s  %s\n' phase seconds result
  local i total=0
  for i in "${!names[@]}"; do
    printf '%-28s %8s  %s\n' "${names[$i]}" "${secs[$i]}" "${results[$i]}"
    total=$((total + secs[i]))
  done
  printf '%-28s %8s\n' total "$total"
}
trap summary EXIT
for phase in "$@"; do
  start=$(date +%s)
  $make_cmd --no-print-directory "$phase"
  rc=$?
  names+=("$phase") secs+=($(( $(date +%s) - start )))
  if [ "$rc" -ne 0 ]; then
    results+=("failed (status $rc)")
    exit "$rc"
  fi
  results+=(ok)
done
