# The README's two commands: `make run` (paper trading in the foreground) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint typecheck pytest bench deb

setup:
	VENV=$(VENV) bash packaging/dev-setup.sh

run: setup
	$(VENV)/bin/s1mpled run --config etc/s1mpled/s1mpled.yaml

test: setup lint typecheck pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check s1mpled s1mpled_sim tests bench

typecheck:
	$(VENV)/bin/mypy

pytest:
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/state_save.py
	$(PY) bench/state_torture.py
	$(PY) bench/startup.py
	$(PY) bench/throughput.py
	$(PY) bench/reconcile.py
	$(PY) bench/fill_latency.py
	$(PY) bench/reconnect.py

# The Debian package (needs root for apt-get and about two minutes): prints the .deb's path.
deb:
	bash packaging/build-deb.sh
