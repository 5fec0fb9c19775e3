# Everything a newcomer needs: `make test` (creates .venv, installs, tests) and `make compare`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra flags for the harness, e.g. make compare ARGS="--preset=he2015" (same for diagnose)
ARGS ?=

.PHONY: venv test lint compare diagnose benchmark docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# The plugin tests run once per Keras backend; the harness uses TensorFlow only.
test: lint
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q tests/plugin
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q tests/plugin
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests

compare: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m experiments.compare $(ARGS)

# Signal propagation at initialization, every initializer side by side; no training.
diagnose: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m experiments.diagnose $(ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/init_throughput.py
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/harness_overhead.py
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/harness_speed.py
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/model_tools.py
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/ray_overhead.py

# The documentation site from docs/ and the docstrings into site/; strict: any warning fails.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

# NO_MKDOCS_2_WARNING: Material prints a banner on every build (its end of life, May 2027).
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
