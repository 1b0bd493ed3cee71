# `make demo`: the main job on the tiny default, end to end (no PyTorch needed).
# `make test`: the test suite (installs torch==2.13.0, the CPU build, first; libtpu for
# the planner's TPU compiles).
# Each creates .venv when missing and installs what it needs, every version held to
# requirements.lock (a constraints file: the exact set the suite last passed with).
# `make lock`: refresh requirements.lock after setup.py changes (docs/testing.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2 -q
DEMO_OUT ?= demo_out
LOCK := requirements.lock
LOCK_VENV ?= .lockvenv
# Where the torch CPU build is found when locking (a folder of wheels or a find-links URL),
# so the lock never names a CUDA build or nvidia-* packages.
TORCH_WHEELS ?= /opt/wheels
# `make lock LOCK_UPGRADE=--upgrade` takes the newest release setup.py allows of every
# package; without it, every pin setup.py still allows is kept.
LOCK_UPGRADE ?=

.PHONY: demo test lock clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: setup.py $(LOCK) | $(PY)
	$(PY) -m pip install -q -c $(LOCK) -e .
	touch $@

# torch==2.13.0 first: that CPU build lies on local disk; any looser requirement
# would pull a multi-GB CUDA build.
$(VENV)/.test-installed: setup.py $(LOCK) | $(PY)
	$(PY) -m pip install -q -c $(LOCK) torch==2.13.0
	$(PY) -m pip install -q -c $(LOCK) -e '.[test,tpu,tfds]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(VENV)/bin/w2s-vqa demo --out $(DEMO_OUT)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS) tests

# The lock is made for Python 3.11 on x86_64 Linux (glibc 2.31 or later: libtpu's wheels
# need it), whatever machine runs this; uv lives in its own venv, not in .venv.
$(LOCK_VENV)/bin/uv:
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q uv==0.13.9

lock: $(LOCK_VENV)/bin/uv
	$(LOCK_VENV)/bin/uv pip compile setup.py --extra test --extra tpu --extra tfds \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_31 \
	    --find-links $(TORCH_WHEELS) --custom-compile-command 'make lock' \
	    $(LOCK_UPGRADE) -o $(LOCK)

clean:
	rm -rf $(VENV) $(LOCK_VENV) *.egg-info $(DEMO_OUT)
