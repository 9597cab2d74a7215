# The two commands of a fresh machine: `make demo` and `make test`. Both install first.
VENV  := .venv
STAMP := $(VENV)/.installed
FF    := $(VENV)/bin/fiscalflow

.PHONY: demo test lint unit integration bench install clean-local

$(STAMP): pyproject.toml tooling/pyproject.toml constraints.txt scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(FF) demo

test: $(STAMP) lint
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

integration: $(STAMP)
	$(VENV)/bin/pytest tests/integration

bench: $(STAMP)
	$(FF) bench all
