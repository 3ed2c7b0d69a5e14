# Two commands: `make run` (the service on the embedded simulator) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint pytest venv prometheus systemd bench diagrams clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# ib_insync 0.9.86 for the simulator's compatibility test. Without its dependencies: its
	# `eventkit` would overwrite the module of the same name that ib_async gets from aeventkit.
	$(PY) -m pip install -q --no-deps 'ib_insync==0.9.86'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/optionsbot run $(if $(CONFIG),--config $(CONFIG))

# Prometheus (promtool) and Alertmanager (amtool) from Debian's packages, only when missing.
# Their services are disabled: the tests start their own Prometheus on a free port.
prometheus:
	@{ command -v promtool && command -v amtool; } >/dev/null 2>&1 || { \
	  echo "installing prometheus and prometheus-alertmanager from Debian's packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null && \
	  { $(SUDO) systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true; }; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# systemd-analyze (the unit file's check) from Debian's systemd package, only when missing.
systemd:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd (for systemd-analyze) from Debian's packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    systemd >/dev/null; }

# Two workers: most end-to-end tests wait on a simulated clock rather than use a core.
pytest: venv prometheus systemd
	$(PY) -m pytest -q -n 2 --dist worksteal

test: lint pytest

bench: venv
	$(PY) -m bench.bars

diagrams: venv
	$(PY) -m machines.diagram --write README.md

clean:
	rm -rf $(VENV) var .pytest_cache
