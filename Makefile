# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
#   make demo          boot the OpenZFS guests and show the collection at work
#   make test          lint + sanity + units + ansible-lint + integration on OpenZFS 2.4, 2.3 and 2.1
#   make lint | sanity | units | ansible-lint | integration [ZFS_SERIES=2.4|2.3|2.1]
#   make integration-matrix   every series, the guest shapes side by side (INTEGRATION_LANES=2)
#   make vm-shell      a root shell in a fresh guest (stops when the shell exits)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell { cat tests/requirements-dev.txt tests/unit/requirements.txt tests/apt-packages.txt; $(PYTHON) -VV; } 2>/dev/null | sha1sum | cut -c1-12)
STAMP_DEPS := $(VENV)/.deps-$(DEPS_HASH)
# The virtualenv itself lives outside the clone, keyed by what it holds, so a fresh clone on the same machine
# (CI) links the one it built before instead of installing everything again; .venv is the link.
VENV_CACHE ?= /var/cache/pyzfsautosnap-venv
COLLECTION := $(CURDIR)/.build/staged/ansible_collections/pyzfsautosnap/zfs
LINKROOT := $(CURDIR)/.build/link
ZFS_SERIES ?= 2.4
ZFS_SERIES_ALL ?= 2.4 2.3 2.1
# auto: the full suite on the newest series, the smoke subset on the others (tests/integration/conftest.py)
INTEGRATION_SUBSET ?= auto
# integration jobs (a series' guest shape each) that `make test` runs at once
INTEGRATION_LANES ?= 2
PYTEST_ARGS ?=
# the sizes the figures in README.md were measured with; the scripts default to the specified ones
BENCH_AUTOSNAP_ARGS ?= --datasets 100 --snapshots 30 --prune 5 --repeat 3
BENCH_SYNCOID_ARGS ?= --datasets 100
export PATH := $(BIN):$(PATH)

export ANSIBLE_COLLECTIONS_PATH := $(LINKROOT)

.PHONY: all deps stage stage-link demo test lint sanity units ansible-lint integration integration-all integration-matrix vm-shell testbed testbeds bench clean

all: test

# Host packages and a virtualenv with pinned Python requirements; reruns only when the lists change.
deps: $(STAMP_DEPS)
$(STAMP_DEPS): tests/requirements-dev.txt tests/apt-packages.txt
	tests/utils/install-host-packages.sh tests/apt-packages.txt
	tests/utils/cached-venv.sh '$(PYTHON)' '$(VENV_CACHE)/$(DEPS_HASH)' '$(VENV)' tests/requirements-dev.txt
	tests/utils/ansible-test-get-pip.sh $(BIN)/python
	touch $@

demo: deps stage-link
	$(BIN)/python tests/demo/demo.py

# Each phase timed; a per-phase table is printed at the end, also when a phase fails. The guest images
# build in the background while the linters and unit tests run (&testbeds ... wait).
test:
	tests/utils/phases.sh '$(MAKE)' deps '&testbeds' lint sanity units ansible-lint wait integration-matrix

lint: deps
	$(BIN)/ruff check plugins tests bench
	$(BIN)/yamllint -s .
# mypy: strict on the engine; per-module relaxations are in mypy.ini
	$(BIN)/mypy

# ansible-test wants the collection at ansible_collections/<ns>/<name>: stage a copy of the tracked files.
stage: deps
	rm -rf $(COLLECTION)
	mkdir -p $(COLLECTION)
	git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ $(COLLECTION)/
	# ansible-test lists files with git; the staged copy is its own repository, not ignored build output of ours
	cd $(COLLECTION) && git init -q && git add -A

sanity: stage
	cd $(COLLECTION) && $(BIN)/ansible-test sanity --color no --python 3.11 --requirements

units: stage
	cd $(COLLECTION) && $(BIN)/ansible-test units --color no --python 3.11 --requirements

ansible-lint: deps stage-link
	$(BIN)/ansible-lint --offline --profile production

# One OpenZFS series (ZFS_SERIES=2.4, 2.3 or 2.1) on real kernel code in QEMU guests;
# INTEGRATION_SUBSET=full runs every test on any series.
integration: deps stage-link
	ZFS_SERIES=$(ZFS_SERIES) INTEGRATION_SUBSET=$(INTEGRATION_SUBSET) \
	  $(BIN)/python -m pytest -p no:cacheprovider tests/integration -v -rs --durations=15 $(PYTEST_ARGS)

integration-all: deps
	for series in $(ZFS_SERIES_ALL); do $(MAKE) --no-print-directory integration ZFS_SERIES=$$series; done

# Every series of ZFS_SERIES_ALL, each guest shape of each series as a job, INTEGRATION_LANES jobs at once.
# The images are built first, one at a time: the jobs of a series would otherwise build its image twice at once.
integration-matrix: deps stage-link $(foreach series,$(ZFS_SERIES_ALL),testbed-$(series))
	INTEGRATION_SUBSET=$(INTEGRATION_SUBSET) $(BIN)/python tests/utils/integration_matrix.py \
	  --lanes $(INTEGRATION_LANES) $(ZFS_SERIES_ALL) -- $(PYTEST_ARGS)

integration-%: deps
	$(MAKE) --no-print-directory integration ZFS_SERIES=$*

# Integration runs use the working tree itself through a symlinked collection path.
stage-link:
	mkdir -p $(LINKROOT)/ansible_collections/pyzfsautosnap
	ln -sfn $(CURDIR) $(LINKROOT)/ansible_collections/pyzfsautosnap/zfs

testbed: deps
	ZFS_SERIES=$(ZFS_SERIES) $(BIN)/python tests/testbed/vm.py build

# every series' image, one after another
testbeds: $(foreach series,$(ZFS_SERIES_ALL),testbed-$(series))

testbed-%: deps
	$(MAKE) --no-print-directory testbed ZFS_SERIES=$*

vm-shell: deps
	ZFS_SERIES=$(ZFS_SERIES) $(BIN)/python tests/testbed/vm.py shell --shape $(or $(SHAPE),single)

# Ratios against baselines measured in the same run; see bench/README.md.
bench: deps
	$(BIN)/python bench/replicate_datapath.py
	$(BIN)/python bench/autosnap.py $(BENCH_AUTOSNAP_ARGS)
	$(BIN)/python bench/replicate_syncoid.py $(BENCH_SYNCOID_ARGS)

clean:
	rm -rf .build tests/output .pytest_cache .ruff_cache
