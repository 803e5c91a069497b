# Set-up on a fresh machine: `make demo` or `make test` does everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dnnzip-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) ; \
	fi
	touch $(STAMP)

demo: setup
	$(BIN)/dnnzip demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/pip install -q nncf
	@echo "see benchmarks/BENCHMARKS.md for the command of each benchmark"

clean:
	rm -rf $(VENV) runs .pytest_cache
