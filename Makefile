# The two commands of the README: `make demo` (the main job on the bundled sample) and
# `make test` (lint + the test suite). Both create or reuse the virtual environment.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HMG_RAW_DIR ?= data/sample
export HMG_STORE_DIR ?= data/store
# The Dagster instance lives in the store, unless DAGSTER_HOME is set (other than by the activated
# .venv: hmg.env marks the one it sets with HMG_VENV_DAGSTER_HOME).
ifeq ($(DAGSTER_HOME),$(HMG_VENV_DAGSTER_HOME))
export DAGSTER_HOME := $(abspath $(HMG_STORE_DIR))/dagster_home
else
export DAGSTER_HOME
endif
# `make demo` runs the job hmg_main: trained_model and evaluation_metrics with all their
# upstream assets (and the other outputs of upstream multi-assets), and their checks.
MAIN_JOB ?= hmg_main

# `make experiments` runs the job llava_augmentation (every shard of the LLaVA comments and their
# embeddings), then paper_experiments: every variant of the paper's Tables II-V, paper_tables,
# and their upstream. On the bundled sample (offline) the LLaVA comments come from a tiny random
# LLaVA: a plumbing check, not LLaVA (set HMG_LLAVA_MODEL / HMG_LLAVA_BACKEND).
ifeq ($(HMG_RAW_DIR),data/sample)
# (only for in-process generation: a served model has its own name, HMG_LLAVA_MODEL)
ifeq ($(filter-out transformers,$(HMG_LLAVA_BACKEND)),)
export HMG_LLAVA_MODEL ?= tiny-random
endif
# `make demo` / `make experiments` on the small sample run every step in the run's process: a
# process per step costs ~2.5 s of start-up and imports on 2 cores, more than most steps take
# here (BENCHMARKS.md). Only those two targets: the tests and `make dev` keep the default.
RUN_ENV := HMG_EXECUTOR="$${HMG_EXECUTOR:-in_process}"
endif

.PHONY: install demo experiments test lint format dev sample sample-iesn bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `source .venv/bin/activate` also sources hmg.env (appended once to the bash/zsh activate
# script): the plain `dagster` commands then find this code location and instance.
install: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@grep -qsF '/hmg.env"' "$(BIN)/activate" || printf '\n# Added by `make install`: the project environment (hmg.env).\nHMG_PROJECT_DIR=%s; . "$$HMG_PROJECT_DIR/hmg.env"\n' "'$(CURDIR)'" >> "$(BIN)/activate"

# Concurrency pools (the `gpu` pool of the embedding and training assets) default to one
# step at a time across all runs of this instance.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p "$(DAGSTER_HOME)"
	printf 'concurrency:\n  pools:\n    default_limit: 1\n' > "$@"

# The run is launched in the code location `dagster dev` loads (hmg_pipeline/launch.py): the UI
# lists it under the job; make waits for it and fails if the run fails.
demo: install
	$(RUN_ENV) $(BIN)/python -m hmg_pipeline.launch $(MAIN_JOB)

experiments: install
	$(RUN_ENV) $(BIN)/python -m hmg_pipeline.launch llava_augmentation
	$(RUN_ENV) $(BIN)/python -m hmg_pipeline.launch paper_experiments

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

dev: install
	$(BIN)/dagster dev

sample: install
	$(BIN)/python -m hmg_pipeline.core.sample --out data/sample --seed 0 --scale small

bench: install
	$(BIN)/python bench/sample_generation.py

# Keeps (rewrites) the instance's dagster.yaml, so the plain `dagster` commands still work.
clean:
	rm -rf data/store
	@$(MAKE) --no-print-directory "$(DAGSTER_HOME)/dagster.yaml"
