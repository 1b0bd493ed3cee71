# `make demo`: the main job on the tiny default, end to end (no PyTorch needed).
# `make test`: the test suite (installs torch==2.13.0, the CPU build, first; libtpu for
# the planner's TPU compiles).
# Each creates .venv when missing and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2 -q
DEMO_OUT ?= demo_out

.PHONY: demo test clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: setup.py | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

# torch==2.13.0 first: that CPU build lies on local disk; any looser requirement
# would pull a multi-GB CUDA build.
$(VENV)/.test-installed: setup.py | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,tpu,tfds]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(VENV)/bin/w2s-vqa demo --out $(DEMO_OUT)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) *.egg-info $(DEMO_OUT)
