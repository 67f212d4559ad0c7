# The README's two commands are `make demo` and `make test`; both bootstrap what they need
# (`make setup`) and are idempotent: a second run only redoes what changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT      := $(abspath .)
VENV      := $(ROOT)/.venv
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip --disable-pip-version-check -q
COMPAT    := $(ROOT)/.build/py38-pins
WS        := $(ROOT)/.build/catkin_ws
PKG       := $(ROOT)/packages/depth_estimation
APT_PKGS  := $(shell cat dependencies-apt-dev.txt | grep -v '^\#')
WHEELS    := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMPS    := $(ROOT)/.build/stamps

# The Duckietown image's Python (3.8): found on PATH or through pyenv; the core tests run on it too.
PY38_CANDIDATES := $(wildcard $(HOME)/.pyenv/versions/3.8*/bin/python3.8) $(shell command -v python3.8 2>/dev/null)
PY38      ?= $(firstword $(foreach p,$(PY38_CANDIDATES),$(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null && echo $(p))))
PY38_VENV := $(ROOT)/.build/py38-venv

DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup apt venv workspace pins py38 test demo clean

help:
	@echo "make demo   - run the depth node on a real camera recording, write PNGs + latency report"
	@echo "make test   - pytest on the core library + rostest integration tests"
	@echo "make setup  - install ROS (apt), the venv and build the catkin workspace (both above do this;"
	@echo "              make test also builds the Python 3.8 venv and the Duckietown-image pins)"

# `make demo` needs these only; `make test` also builds the Python 3.8 venv and the pins (below)
setup: apt venv workspace

apt: $(STAMPS)/apt
$(STAMPS)/apt: dependencies-apt-dev.txt
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[setup] installing Debian packages:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "[setup] Debian packages present"; fi
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: requirements.txt constraints.txt $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || { echo "[setup] creating $(VENV)"; /usr/bin/python3 -m venv --system-site-packages $(VENV); }
	@echo "[setup] installing Python dependencies (torch CPU, transformers, ...)"
	@$(PIP) install $(WHEELS) -c constraints.txt -r requirements.txt 2>&1 | grep -v -e '^WARNING: Location' -e '^$$' || true
	@$(PY) -c "import torch, transformers, cv2, numpy, rosbags; assert numpy.__version__ < '2'" \
	  || { echo "[setup] Python dependencies failed to install"; exit 1; }
	@touch $@

# The Duckietown image's transformers pins in a side directory, for the tests only. pip's conflict
# check would compare them with the venv's own packages (transformers 5 requires kernels, which
# requires huggingface-hub>=1.32, the pins hold 0.36): the two sets never share a sys.path, so the
# check is off (--no-warn-conflicts) instead of printing a resolver error.
pins: $(STAMPS)/pins
$(STAMPS)/pins: requirements-py38.txt constraints.txt $(STAMPS)/venv
	@echo "[setup] installing the Duckietown-image pins (transformers==4.46.3) into $(COMPAT)"
	@rm -rf $(COMPAT) && $(PIP) install --no-warn-conflicts --target $(COMPAT) -c constraints.txt \
	  -r requirements-py38.txt 2>&1 | grep -v -e '^WARNING: Location' -e '^$$' || true
	@touch $@

workspace: $(STAMPS)/workspace
$(STAMPS)/workspace: $(STAMPS)/venv $(PKG)/CMakeLists.txt $(PKG)/package.xml $(PKG)/setup.py
	@mkdir -p $(WS)/src
	@ln -sfn $(PKG) $(WS)/src/depth_estimation
	@echo "[setup] catkin_make in $(WS)"
	@cd $(WS) && catkin_make -DPYTHON_EXECUTABLE=$(PY) -DCATKIN_ENABLE_TESTING=ON > $(ROOT)/.build/catkin_make.log 2>&1 \
	  || { tail -30 $(ROOT)/.build/catkin_make.log; exit 1; }
	@touch $@

# A venv of the image's Python with the image's dependency file (dependencies-py3.txt), when a
# Python 3.8 exists here; tests/test_py38.py runs the core tests in it (and says when it cannot).
py38: $(STAMPS)/py38
$(STAMPS)/py38: dependencies-py3.txt
	@mkdir -p $(STAMPS)
	@if [ -z "$(PY38)" ]; then echo "[setup] no Python 3.8 here: the core tests will not run on the image's Python"; \
	else \
	  echo "[setup] Python 3.8 venv with the image's dependencies (dependencies-py3.txt) in $(PY38_VENV)"; \
	  rm -rf $(PY38_VENV) && $(PY38) -m venv $(PY38_VENV) && \
	  $(PY38_VENV)/bin/pip install --disable-pip-version-check -q -r dependencies-py3.txt pytest 2>&1 \
	    | grep -v -e '^WARNING: Location' -e '^$$' || true; \
	  $(PY38_VENV)/bin/python -c "import torch, transformers, cv2, onnxruntime, hqq, rosbags" \
	    || { echo "[setup] the Python 3.8 dependencies failed to install"; exit 1; }; \
	fi
	@touch $@

test: setup pins py38
	@source ./env.sh && cd $(ROOT) && python -m pytest $(PYTEST_ARGS)

demo: setup
	@source ./env.sh && cd $(ROOT) && python -m depth_estimation.tools.demo $(DEMO_ARGS)

clean:
	rm -rf .build .venv
