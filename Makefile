# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= proxy.example.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test check clean

# (Re)install whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gatewise serve --config $(CONFIG)

check: $(STAMP)
	$(VENV)/bin/gatewise check --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
