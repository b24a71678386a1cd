# Two commands on a fresh machine: `make run` and `make test`. Both create
# .venv and install the project (with test extras) the first time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench demo clean proto

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gated needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gated sim

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The generated gRPC code in gated/rpc/v1 is committed (a fresh clone runs
# without grpcio-tools); regenerate it after editing proto/gated/v1/*.proto.
proto: $(STAMP)
	$(BIN)/python -m gated.rpc.codegen

bench: $(STAMP)
	$(BIN)/gated bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info

# The HID tests on a real /dev/uinput, in a VM (reliability/hid_vm.sh: needs
# qemu-system-x86, busybox-static and kmod; caches its kernel in ~/.cache/gated-vm).
.PHONY: reliability-hid
reliability-hid: $(or $(STAMP_TEST),$(STAMP))  # main names the test stamp STAMP_TEST
	reliability/hid_vm.sh
