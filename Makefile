# `make test`: build .venv when missing, install torch (CPU build) first, then the
# package with its test extra, then run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2 -q

.PHONY: test clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch==2.13.0 first: that CPU build lies on local disk; any looser requirement
# would pull a multi-GB CUDA build.
$(VENV)/.test-installed: setup.py | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) *.egg-info
