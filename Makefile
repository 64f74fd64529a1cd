# bagtrack — `make run` starts the whole system, `make test` runs the suite. Both bootstrap ./.venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run up ps down restart contracts test test-fuzz test-scale test-faults venv tools migrate create-admin rotate-key bench seed seed-bills bench-scanning bench-billing bench-dashboard loadtest clean

venv:
	@scripts/bootstrap.sh

tools:
	@scripts/ensure-tools.sh

run: venv
	@$(PY) -m scripts.run

# The scaled system: replicas of every tier behind a real nginx, on PostgreSQL + Redis (docs/scale-out.md).
# make up [SCALE="scanning=3 billing=2"] [PGBOUNCER=1] · make ps · make restart SERVICE=scanning · make down
up: venv tools
	@$(PY) -m scripts.fleet up $(if $(SCALE),--scale "$(SCALE)")

ps: venv
	@$(PY) -m scripts.fleet ps

down: venv
	@$(PY) -m scripts.fleet down

restart: venv
	@$(PY) -m scripts.fleet restart $${SERVICE:?usage: make restart SERVICE=<auth|scanning|billing|dashboard|gateway>}

# The committed contracts of the internal routes and auth's JWKS (docs/contracts.md): after changing one, commit
# contracts/ (make test checks the code against them and them against contracts/previous/).
contracts: venv
	@$(PY) -m scripts.contracts write

# The whole suite: every database test runs on SQLite and on PostgreSQL (127.0.0.1:5432), with Redis.
test: venv tools
	@$(PY) -m pytest $(PYTEST_ARGS)

# The scale tests' long form: every tier at 2, each restarted and each with a replica killed under heavier load
# (the smoke of the same runs in `make test`). PGBOUNCER=1: the same, the services behind pgbouncer.
test-scale: venv tools
	@BAGTRACK_SCALE_LONG=1 BAGTRACK_SCALE_PGBOUNCER=$(if $(PGBOUNCER),1,0) $(PY) -m pytest tests/scale -q $(PYTEST_ARGS)

# The fault suite, long (8 s phases, 40 req/s): make up's processes, a replica killed, Redis stopped and started,
# scanning's database cut and slowed, the dashboard frozen; a table per fault (its short form runs in `make test`).
test-faults: venv tools
	@BAGTRACK_FAULTS_LONG=1 $(PY) -m pytest tests/faults -q -s $(PYTEST_ARGS)

# Both fuzzers, long: the in-process route fuzz (400 hostile requests per route and role) and schemathesis through
# the real gateway as each role (200 examples per operation): about 12-15 minutes.
test-fuzz: venv tools
	@BAGTRACK_FUZZ_CASES=$${FUZZ_CASES:-400} BAGTRACK_SCHEMATHESIS_EXAMPLES=$${SCHEMATHESIS_EXAMPLES:-200} \
		$(PY) -m pytest tests/fuzz -q $(PYTEST_ARGS)

migrate: venv
	@$(PY) -m shared.migrate

create-admin: venv
	@$(PY) -m services.auth.cli create-admin --username $${ADMIN:?usage: make create-admin ADMIN=<username>}

# A new signing key: published at once, signing after AUTH_KEY_ACTIVATION_DELAY (README "Signing keys and rotation").
rotate-key: venv
	@$(PY) -m services.auth.cli rotate-key $(if $(ACTIVATE_IN),--activate-in $(ACTIVATE_IN)) $(if $(FORCE),--force)

# Benchmarks print figures; they are not part of `make test`.
bench: venv tools
	@$(PY) bench/gateway_hop.py

# Load BAGS bags (default 1.8 M) into the scanning database of DATABASE_URL (SQLite under var/ when unset).
seed: venv
	@$(PY) -m scripts.seed --bags $${BAGS:-1800000}

# Load BILLS bills (default 50,000) onto the unbilled parents of the scanning database of DATABASE_URL (make seed first).
seed-bills: venv
	@$(PY) -m scripts.seed_bills --bills $${BILLS:-50000}

# Adds and bill reads through the gateway with 1.8 M bags and 50,000 bills in PostgreSQL (seeded once, then reused).
bench-billing: venv tools
	@$(PY) bench/billing.py $(BENCH_ARGS)

# Dashboard stats and composed lookups through the gateway with 1.8 M bags and 50,000 bills (same data as above).
bench-dashboard: venv tools
	@$(PY) bench/dashboard.py $(BENCH_ARGS)

# Lookups and child scans through the gateway with 1.8 M bags in PostgreSQL (seeded once, then reused).
bench-scanning: venv tools
	@$(PY) bench/scanning.py

# The shift mix through the gateway of a running system (make run), USERS virtual users for DURATION seconds.
loadtest: venv
	@$(PY) -m bench.loadtest --users $${USERS:-200} --duration $${DURATION:-60} $(LOADTEST_ARGS)

clean:
	rm -rf var .pytest_cache
