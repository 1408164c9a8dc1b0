# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both are idempotent: the virtual environment is rebuilt only when the dependency files change.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint docs data venv size clean bench-deps

demo: $(STAMP) data
	$(VENV)/bin/prunekit train --model simple_cnn --data fashion-mnist --epochs 2 --overwrite --out runs/demo
	$(VENV)/bin/prunekit prune --model simple_cnn --data fashion-mnist --weights runs/demo/model.safetensors --layer-channels conv1=2 --importance l1 --finetune-epochs 1 --overwrite --out runs/demo/prune-conv1
	$(VENV)/bin/prunekit prune --model resnet20 --data fashion-mnist --target-macs 0.5 --importance l2 --baseline-epochs 1 --finetune-epochs 1 --overwrite --out runs/demo/resnet20-half-macs

# Lint and types first (seconds), then the documentation site, then the tests.
test: $(STAMP) lint docs data
	@sh scripts/ensure_chromium.sh
	@sh scripts/ensure_postgres.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) data
	PRUNEKIT_SLOW=1 $(PY) -m pytest -m slow $(PYTEST_ARGS)

# ruff over the whole repository; mypy over the core packages (both configured in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/) into site/; any warning fails the build.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements/constraints-dev.txt -e ".[dev]"
	touch $(STAMP)

bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -c requirements/constraints-dev.txt -e ".[dev,bench]"
	@sh scripts/ensure_corpus.sh

data:
	@DATA_DIR="$(DATA_DIR)" sh scripts/ensure_data.sh

size:
	@find prunekit -name '*.py' | xargs wc -l | sort -n | tail -25

clean:
	rm -rf $(VENV) runs site .pytest_cache .hypothesis .mypy_cache .ruff_cache
