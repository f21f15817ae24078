# The two commands: `make run` serves the API on the shipped checkpoint, `make test` passes the tests.
# Every target sets up .venv first; pip takes torch/torchvision from this machine's disk.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test test-fast bench gpu-wheels lint evidence ablations ablation-random ablation-w0 ablation-l2 investigate-aligned investigate-mix investigate-aligned-mix clean

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

# Runs benchmarks/ and rewrites docs/BENCHMARKS.md (under 15 min on 2 cores); `make bench ONLY=scoring`
# runs one section and prints it. PASSIVE: spinning OpenMP threads on shared cores cost up to 20x.
bench: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m benchmarks $(if $(ONLY),--only $(ONLY))

# Wheels for this workplace's GPU machine, whose python3 (3.12) has torch but no faiss and no package
# index: carry .whl/ there and run the command benchmarks/gpu_route.py prints (docs/BENCHMARKS.md).
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d .whl "faiss-cpu==1.15.1"

evidence: setup
	$(BIN)/python -m docs.evidence.run

# The shipped recipe, then the three ablations of docs/MODEL_CARD.md. Each ablation starts from the
# main run's finished stages (copied once, never shared), so it differs from the shipped checkpoint
# only in the setting it ablates. `make evidence` routes every runs/ablation_*/supernet.safetensors.
RECIPE := configs/sdr_tiny_fmnist.yaml
MAIN_RUN := runs/sdr_tiny_fmnist
# $(1) name, $(2) main-run stage markers to reuse, $(3) recipe overrides
define ablation
	mkdir -p runs/ablation_$(1)
	for marker in $(2); do \
	  stage=$${marker%%/*}; \
	  test -f $(MAIN_RUN)/$$marker || { echo "$(MAIN_RUN)/$$stage is not finished: run the recipe first" >&2; exit 1; }; \
	  test -d runs/ablation_$(1)/$$stage || cp -r $(MAIN_RUN)/$$stage runs/ablation_$(1)/; \
	done
	OMP_WAIT_POLICY=PASSIVE $(BIN)/sdr train all --config $(RECIPE) --run-dir runs/ablation_$(1) $(3)
endef

ablations: ablation-random ablation-w0 ablation-l2

# (a) equal random splits of the images instead of the Sinkhorn clusters
ablation-random: setup
	$(call ablation,random,baseline/done.json,--set cluster.mapping=random)

# (b) SimSiam on W0 alone for the same total steps: every progressive step draws W0 (rho = 1)
ablation-w0: setup
	$(call ablation,w0,baseline/done.json cluster/clusters.json,--set progressive.rho=1.0)

# (c) L2 distillation instead of SiamKD; lam = 1/proj_dim makes it a per-dimension mean squared error,
# the scale of SiamKD's cosine loss (lam = 1 would let a 512-dim squared distance swamp SimSiam's loss)
ablation-l2: setup
	$(call ablation,l2,baseline/done.json cluster/clusters.json,--set progressive.distill=l2 --set progressive.lam=0.001953125)

# Investigations for #6 ("clusters beat random splits" was missed; docs/MODEL_CARD.md "What was tried").
# aligned: sibling paths hold similar clusters, so phases 1-3 train on semantic super-clusters
investigate-aligned: setup
	$(call ablation,aligned,baseline/done.json,--set cluster.mapping=aligned)

# mix: half of each sub-net's pool (training and calibration) is whole-set images, so shared weights
# never see one-cluster batches only (tests "one-cluster batches cost W0 its generality")
investigate-mix: setup
	$(call ablation,mix,baseline/done.json cluster/clusters.json,--set progressive.mix=0.5)

# both: aligned mapping and mixed pools
investigate-aligned-mix: setup
	$(call ablation,aligned_mix,baseline/done.json,--set cluster.mapping=aligned --set progressive.mix=0.5)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
