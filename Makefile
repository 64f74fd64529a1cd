# bagtrack — `make run` starts the whole system, `make test` runs the suite. Both bootstrap ./.venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test venv tools migrate create-admin bench clean

venv:
	@scripts/bootstrap.sh

tools:
	@scripts/ensure-tools.sh

run: venv
	@$(PY) -m scripts.run

# The whole suite: every database test runs on SQLite and on PostgreSQL (127.0.0.1:5432), with Redis.
test: venv tools
	@$(PY) -m pytest $(PYTEST_ARGS)

migrate: venv
	@$(PY) -m shared.migrate

create-admin: venv
	@$(PY) -m services.auth.cli create-admin --username $${ADMIN:?usage: make create-admin ADMIN=<username>}

# Benchmarks print figures; they are not part of `make test`.
bench: venv tools
	@$(PY) bench/gateway_hop.py

clean:
	rm -rf var .pytest_cache
