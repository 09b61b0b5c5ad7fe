# `make run` and `make test` install what they need (a virtualenv with the embedded servers)
# and then run; nothing else has to be on the machine but Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install peers run test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

peers:  ## the Debian programs the tests talk to: installed as root, else one message naming them
	bash scripts/install-debian-peers

run: $(STAMP)  ## the whole system on embedded servers; prints the GraphiQL URL
	$(BIN)/mailhub dev $(ARGS)

test: peers $(STAMP)  ## the whole suite; pytest starts the servers it needs (exit 5 = no tests is not a pass)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app schema jobs ml tests bench
	$(BIN)/ruff format --check app schema jobs ml tests bench

format: $(STAMP)
	$(BIN)/ruff format app schema jobs ml tests bench

clean:
	rm -rf var .pytest_cache
