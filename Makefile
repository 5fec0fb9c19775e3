# Everything a newcomer needs: `make test` (creates .venv, installs, tests) and `make compare`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two more installs, each in a venv of its own, checked by make test (see tests/install/).
CORE_VENV := .venv-core
LOWEST_VENV := .venv-lowest
# Extra flags for the harness, e.g. make compare ARGS="--preset=he2015" (same for diagnose)
ARGS ?=

.PHONY: venv test test-core test-lowest test-plugin-jax test-plugin-torch test-tensorflow lint compare diagnose benchmark docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# keras_inits.mup is checked against Microsoft's mup itself. Its package imports only torch
	# and pyyaml (in the test extra); its metadata also asks for torchvision, seaborn and a
	# CUDA build of torch, for its examples, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps 'mup==1.0.0'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# The plugin tests run once per Keras backend (and once more with the lowest versions); the
# harness and the documentation's examples under TensorFlow only. Everything after the lint runs
# side by side (each target's output printed whole when it ends), the TensorFlow run first and
# itself over two pytest workers (a file's tests stay in one worker, with its module fixtures):
# no core idles while another target has work, and the other venvs install meanwhile.
test: lint
	$(MAKE) --jobs=4 --output-sync=target test-tensorflow test-plugin-jax test-lowest test-plugin-torch test-core docs

test-tensorflow: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10 tests

test-plugin-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q tests/plugin

test-plugin-torch: $(STAMP)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q tests/plugin

# The plugin as `pip install keras-inits` installs it, with JAX: no TensorFlow, TensorBoard or
# matplotlib. Its model tools work; SignalHistograms and Diagnosis.plot name the extra.
$(CORE_VENV)/.installed: pyproject.toml
	rm -rf $(CORE_VENV)
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet -e . jax
	touch $@

test-core: $(CORE_VENV)/.installed
	KERAS_BACKEND=jax $(CORE_VENV)/bin/python tests/install/core_only.py

# The plugin tests under JAX with the lowest versions pyproject.toml declares. Only the
# plugin's conftest: tests/conftest.py is the harness's.
$(LOWEST_VENV)/.installed: pyproject.toml tests/install/lowest.txt
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet -e . -r tests/install/lowest.txt
	touch $@

test-lowest: $(LOWEST_VENV)/.installed
	KERAS_BACKEND=jax $(LOWEST_VENV)/bin/python -m pytest -q --confcutdir=tests/plugin tests/plugin

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
	rm -rf $(VENV) $(CORE_VENV) $(LOWEST_VENV) build site *.egg-info .pytest_cache .ruff_cache
