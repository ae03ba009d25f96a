# Two commands do all the set-up:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test test-fast clean

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

demo: install
	$(VENV)/bin/safeconvert demo

test: install
	$(PY) -m pytest -n 2 tests

test-fast: install
	$(PY) -m pytest -m "not slow" tests

clean:
	rm -rf $(VENV)
