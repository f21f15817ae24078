# The two commands: `make run` serves the API on the shipped checkpoint, `make test` passes the tests.
# Every target sets up .venv first; pip takes torch/torchvision from this machine's disk.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test test-fast bench lint evidence clean

setup: $(STAMP) system-deps

# Debian packages: chromium drives the web page's browser test; dataset-fashion-mnist is the
# pre-training data (training and `make evidence`; the test suite never reads it).
SYSTEM_PACKAGES := chromium dataset-fashion-mnist
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	test -d /usr/share/datasets/fashion-mnist || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/sdr serve --host 127.0.0.1 --port 8000

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Prints the measured ratios; docs/BENCHMARKS.md records them with the machine and load.
bench: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m benchmarks.route_throughput
	$(BIN)/python -m benchmarks.train_step

evidence: setup
	$(BIN)/python -m docs.evidence.run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
