# Two commands on a fresh machine: `make run` and `make test`. Both create
# .venv and install the project (with test extras) the first time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench demo clean proto reliability

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

# The reliability campaign (about an hour): 1,000 power cuts, WAL rollbacks,
# partitions, 10^6 fuzz executions per target, a secrets scan; writes
# docs/reliability.md. CUTS=, FUZZ_RUNS= for a shorter run.
CUTS      ?= 1000
FUZZ_RUNS ?= 1000000
reliability: $(STAMP)
	$(BIN)/python -m reliability --cuts $(CUTS) --fuzz-runs $(FUZZ_RUNS)

bench: $(STAMP)
	$(BIN)/gated bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
