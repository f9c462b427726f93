# make test   : unit tests, plus the privileged netns tests when run as root
# make demo   : the mirror end to end in a private namespace (root)
# make bench  : netns benchmark of the engine beside its baselines (root)
# make soak   : 10 minutes at full load; memory, fds and shared memory must stay flat
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ROOT   := $(shell id -u)
PRIV   := $(if $(filter 0,$(ROOT)),1,0)

.PHONY: all system venv test test-unit test-privileged demo bench bench-pipeline soak stats lint clean

all: test

# The system tools (ping, iperf3, tcpdump, ...): installed when missing and root, else named.
system:
	@PYTHON=$(PYTHON) bash tools/setup-system.sh

$(PY): pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(PY)

venv: $(PY)

test: system $(PY)
	ENGINE_PRIVILEGED_TESTS=$(PRIV) $(PY) -m pytest -q -rs

test-unit: $(PY)
	ENGINE_PRIVILEGED_TESTS=0 $(PY) -m pytest -q -m 'not privileged'

test-privileged: system $(PY)
	ENGINE_PRIVILEGED_TESTS=1 $(PY) -m pytest -q -rs -m privileged

demo: system $(PY)
	$(PY) -m engine demo

# The C reference mirror of ../shared/bench, when it is there, joins the comparison.
SHARED      ?= ../shared
CMIRROR_SRC := $(wildcard $(SHARED)/bench/cmirror.c)
COMPARE     := $(if $(CMIRROR_SRC),--compare 'cmirror=$(CURDIR)/build/cmirror {dev}' \
               --compare 'cmirror-vnet+vnet=$(CURDIR)/build/cmirror --vnet {dev}')

build/cmirror: $(CMIRROR_SRC)
	mkdir -p build && gcc -O2 -o $@ $<

bench: system $(PY) $(if $(CMIRROR_SRC),build/cmirror)
	$(PY) tools/bench/netns_bench.py --seconds 5 --repeat 3 $(COMPARE) \
	  --json build/bench-netns.json --markdown build/bench-netns.md --svg build/bench-netns.svg

bench-pipeline: $(PY)
	mkdir -p build
	$(PY) tools/bench/pipeline_bench.py --frames 3000000 --repeat 2 --json build/bench-pipeline.json \
	  --markdown build/bench-pipeline.md --svg build/bench-pipeline.svg

soak: system $(PY)
	$(PY) tools/soak.py --minutes 10

stats: $(PY)
	$(PY) -m engine stats

lint: $(PY)
	$(PY) -m pyflakes engine provisioning tests tools 2>/dev/null || $(PY) -m compileall -q engine provisioning tests tools

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
