# The two commands of the README: `make demo` and `make test`. Each sets up its own virtual
# environment first. torch==2.13.0 is installed before the package: on a CPU-only machine that
# pins the local CPU wheel, so no several-GB CUDA packages are pulled in by a newer torch.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m audionet_ray.tune --keywords yes,no,up,down,left,right,on,off,stop,go --time-budget 6m

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
