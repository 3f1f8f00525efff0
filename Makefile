# Entry points for people and CI. Each target that needs Docker runs scripts/setup
# first: it is idempotent and takes a few seconds when everything is present.

PY := .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup test unit up bench bench-quick

setup:
	scripts/setup

# The whole suite: unit, integration (real Docker) and e2e (Traefik, browser).
test:
	scripts/setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Unit tests only: needs the venv, not Docker, packages or images.
unit:
	scripts/setup --venv-only
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

up:
	scripts/setup --no-browser
	.venv/bin/reconcile up

bench:
	scripts/setup --no-browser
	$(PY) -m bench $(BENCH_ARGS)

bench-quick:
	scripts/setup --no-browser
	$(PY) -m bench --quick $(BENCH_ARGS)
