#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
# Runs `make <phase>` for each phase in order, stops at the first failure, and always prints how long
# each phase took, so a slow or failing CI run shows where its time went.
#
# A phase written `&PHASE` runs in the background, beside the phases after it, with its output kept in
# .build/phase-PHASE.log (shown when it ends); the phase `wait` waits for the background phases and fails
# when one of them failed. The guest images build this way while the linters and unit tests run: the
# builds wait on downloads and single-threaded steps, the others on pip and one core.
#
#   tests/utils/phases.sh MAKE PHASE...
set -uo pipefail
make_cmd=$1
shift
names=() secs=() results=()
bg_names=() bg_pids=() bg_starts=() bg_logs=()
started=$(date +%s)
summary() {
  printf '\n%-28s %8s  %s\n' phase seconds result
  local i
  for i in "${!names[@]}"; do
    printf '%-28s %8s  %s\n' "${names[$i]}" "${secs[$i]}" "${results[$i]}"
  done
  printf '%-28s %8s\n' 'total (wall clock)' "$(( $(date +%s) - started ))"
}
stop_background() {
  local pid
  for pid in "${bg_pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null; done
}
trap 'stop_background; summary' EXIT
# the background phases run in sessions of their own: a signal that stops this script must stop them too
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
record() {  # name seconds status [note]
  names+=("$1") secs+=("$2")
  if [ "$3" -ne 0 ]; then results+=("failed (status $3)${4:+, $4}"); else results+=("ok${4:+ ($4)}"); fi
}
wait_background() {
  local i rc failed=0
  for i in "${!bg_pids[@]}"; do
    wait "${bg_pids[$i]}"
    rc=$?
    echo "--- ${bg_names[$i]} (in the background; ${bg_logs[$i]}):"
    cat "${bg_logs[$i]}"
    record "${bg_names[$i]}" "$(( $(date +%s) - bg_starts[i] ))" "$rc" 'beside the phases after it'
    [ "$rc" -eq 0 ] || failed=$rc
  done
  bg_names=() bg_pids=() bg_starts=() bg_logs=()
  return "$failed"
}
for phase in "$@"; do
  if [ "$phase" = wait ]; then
    wait_background || exit $?
    continue
  fi
  if [ "${phase#&}" != "$phase" ]; then
    phase=${phase#&}
    mkdir -p .build
    log=.build/phase-$phase.log
    # a process group of its own, so that a failure elsewhere stops all of it
    ( trap - EXIT; exec setsid "$make_cmd" --no-print-directory "$phase" >"$log" 2>&1 </dev/null ) &
    bg_names+=("$phase") bg_pids+=($!) bg_starts+=("$(date +%s)") bg_logs+=("$log")
    echo "phase $phase: started in the background, output in $log"
    continue
  fi
  start=$(date +%s)
  "$make_cmd" --no-print-directory "$phase"
  rc=$?
  record "$phase" "$(( $(date +%s) - start ))" "$rc"
  [ "$rc" -eq 0 ] || exit "$rc"
done
wait_background || exit $?
