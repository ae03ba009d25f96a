# Two commands do all the set-up:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install browser demo test test-fast clean onnx-tf-env

install: $(VENV)/.installed

# Order matters: the CPU build of torch first, so nothing later pulls a CUDA build;
# then the framework set resolved together; then the packages whose declared pins are wrong.
$(VENV)/.installed: pyproject.toml requirements/no-deps.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[frameworks,dev]"
	$(PIP) install --no-deps -r requirements/no-deps.txt
	touch $@

# onnx-tf 1.10 cannot live beside the frameworks above (it needs TF 2.15 and onnx 1.18): it gets its own
# interpreter, used with `--converter-env onnx-tf=.venv-onnx-tf/bin/python` (about 1.4 GB, a minute or two).
ONNX_TF_VENV ?= .venv-onnx-tf
ONNX_TF_PYTHON ?= python3.11

onnx-tf-env: $(ONNX_TF_VENV)/.installed

$(ONNX_TF_VENV)/.installed: requirements/onnx-tf-env.txt
	$(ONNX_TF_PYTHON) -m venv $(ONNX_TF_VENV)
	$(ONNX_TF_VENV)/bin/python -m pip --disable-pip-version-check -q install -r requirements/onnx-tf-env.txt
	touch $@

demo: install
	$(VENV)/bin/safeconvert demo

# The HTML report tests render pages in a real headless browser (Debian's chromium); installed once.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

test: install browser onnx-tf-env
	$(PY) -m pytest -n 2 tests

test-fast: install browser onnx-tf-env
	$(PY) -m pytest -m "not slow" tests

clean:
	rm -rf $(VENV)
