# make test   : unit tests, plus the privileged netns tests when run as root
# make demo   : the mirror end to end in a private namespace (root)
# make bench  : netns benchmark of the engine beside its baselines (root)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ROOT   := $(shell id -u)
PRIV   := $(if $(filter 0,$(ROOT)),1,0)

.PHONY: all venv test test-unit test-privileged demo bench bench-pipeline stats lint clean

all: test

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(PY)

venv: $(PY)

test: $(PY)
	ENGINE_PRIVILEGED_TESTS=$(PRIV) $(PY) -m pytest -q -rs

test-unit: $(PY)
	ENGINE_PRIVILEGED_TESTS=0 $(PY) -m pytest -q -m 'not privileged'

test-privileged: $(PY)
	ENGINE_PRIVILEGED_TESTS=1 $(PY) -m pytest -q -rs -m privileged

demo: $(PY)
	$(PY) -m engine demo

bench: $(PY)
	$(PY) tools/bench/netns_bench.py

bench-pipeline: $(PY)
	$(PY) tools/bench/pipeline_bench.py

stats: $(PY)
	$(PY) -m engine stats

lint: $(PY)
	$(PY) -m pyflakes engine provisioning tests tools 2>/dev/null || $(PY) -m compileall -q engine provisioning tests tools

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
