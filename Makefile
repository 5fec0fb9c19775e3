# Everything a newcomer needs: `make test` (creates .venv, installs, tests) and `make compare`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra flags for the harness, e.g. make compare ARGS="--preset=he2015" (same for diagnose)
ARGS ?=

.PHONY: venv test lint compare diagnose benchmark clean

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
