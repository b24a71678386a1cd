# Two commands on a fresh machine: `make run` and `make test`. Both create
# .venv and install the project the first time: `make run` with the simulator
# (.[sim]), `make test` with the simulator and the test tools (.[sim,test]).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_SIM  := $(VENV)/.installed-sim
STAMP_TEST := $(VENV)/.installed-test
BUF    := tools/node_modules/.bin/buf
NODE_GATE := examples/node-gate/node_modules/.package-lock.json

.PHONY: run test bench demo clean proto check-nosim reliability

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gated needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_SIM): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sim]'
	touch $(STAMP_SIM)

# .[sim,test] is a superset of .[sim]: it stamps both.
$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sim,test]'
	touch $(STAMP_SIM) $(STAMP_TEST)

run: $(STAMP_SIM)
	$(BIN)/gated sim

test: $(STAMP_TEST) $(BUF) $(NODE_GATE)
	$(BIN)/lint-imports --no-cache
	$(BUF) lint
	$(BUF) breaking --against proto/v1.binpb
	$(BIN)/python -m pytest -q

# buf (the contract's lint and breaking-change check) from the npm registry, pinned by
# tools/package-lock.json; the package brings the binary for this platform.
$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $(BUF)

# The Node gate of tests/rpc/test_node_client.py (examples/node-gate): @grpc/grpc-js and
# @grpc/proto-loader from the npm registry, pinned by its package-lock.json (offline once cached).
$(NODE_GATE): examples/node-gate/package.json examples/node-gate/package-lock.json
	cd examples/node-gate && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	touch $(NODE_GATE)

# The generated gRPC code in gated/rpc/v1 is committed (a fresh clone runs
# without grpcio-tools); regenerate it after editing proto/gated/v1/*.proto.
proto: $(STAMP_TEST)
	$(BIN)/python -m gated.rpc.codegen

# proto/v1.binpb is v1 as frozen: `make test` refuses any change to proto/ that breaks it
# (buf breaking, FILE rules: generated code stays source-compatible). It is rebuilt only for a new major version, never for v1.

# The reliability campaign (about an hour): 1,000 power cuts, WAL rollbacks,
# partitions, 10^6 fuzz executions per target, a secrets scan; writes
# docs/reliability.md; then the HID tests on a real /dev/uinput in a VM
# (reliability-hid below). CUTS=, FUZZ_RUNS= for a shorter run.
CUTS      ?= 1000
FUZZ_RUNS ?= 1000000
reliability: $(STAMP_TEST)
	$(BIN)/python -m reliability --cuts $(CUTS) --fuzz-runs $(FUZZ_RUNS)
	reliability/hid_vm.sh

bench: $(STAMP_SIM)
	$(BIN)/gated bench

# A gate's install, without the simulator: `pip install .` (no extras, not
# editable) into a fresh venv, then the commands a gate needs; `gated sim`
# must answer with one line and exit status 2.
NOSIM := /tmp/venv-nosim
check-nosim:
	rm -rf $(NOSIM)
	$(PYTHON) -m venv $(NOSIM)
	$(NOSIM)/bin/python -m pip install --quiet .
	cd /tmp && set -e; G=$(NOSIM)/bin/gated; \
	  ! $(NOSIM)/bin/python -c 'import segno' 2>/dev/null; \
	  $$G --help >/dev/null; $$G run --help >/dev/null; $$G registry --help >/dev/null; \
	  $$G keys new --out $(NOSIM)/keys.json; \
	  $$G token mint --keys $(NOSIM)/keys.json --kid 1 --ticket 5205320758 --static; \
	  printf 'ticket_id,name,company,category,ticket_type,zones,valid_from,valid_until,max_entries,benefits,phone\n5205320758,A,B,guest,day,hall,,,0,,\n' >$(NOSIM)/a.csv; \
	  $$G registry import $(NOSIM)/a.csv --db $(NOSIM)/r.db; $$G registry revoke 5205320758 --db $(NOSIM)/r.db; \
	  rc=0; $$G sim --duration 1 2>$(NOSIM)/sim.err || rc=$$?; cat $(NOSIM)/sim.err; \
	  test $$rc = 2 && test "$$(cat $(NOSIM)/sim.err)" = "gated sim needs the simulator: pip install 'gated[sim]'"; \
	  echo "check-nosim: OK"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info tools/node_modules examples/node-gate/node_modules

# The HID tests on a real /dev/uinput, in a VM (reliability/hid_vm.sh: needs
# qemu-system-x86, busybox-static and kmod; caches its kernel in ~/.cache/gated-vm).
.PHONY: reliability-hid
reliability-hid: $(STAMP_TEST)
	reliability/hid_vm.sh
