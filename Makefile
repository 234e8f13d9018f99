# The Grading Center's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint checks venv dev-deps browser worker bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev-deps: $(VENV)/.dev

## The embedded run: SQLite, files under ./media, the demo, http://127.0.0.1:8000/admin/
run: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput
	$(PY) manage.py create_dev_user
	$(PY) manage.py load_demo
	@echo "Sign in at http://$(HOST):$(PORT)/admin/ as admin / admin (demo users: see README)."
	$(PY) manage.py runserver $(HOST):$(PORT)

## Background workers (TASK_WORKERS of them) for field-day imports when TASKS_BACKEND=database.
worker: $(VENV)/.runtime
	$(PY) manage.py run_workers

## Debian's Chromium for the browser tests (installed when missing and we are root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "Install Debian's chromium package (sudo apt-get install chromium) for the browser tests."; fi; }

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

checks: $(VENV)/.dev
	DJANGO_SETTINGS_MODULE=settings.test $(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=settings.prod DJANGO_SECRET_KEY=check-deploy-$$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	  DJANGO_ALLOWED_HOSTS=grading.example.org $(PY) manage.py check --deploy --fail-level WARNING
	@echo "== bandit: fails on a finding of medium severity or higher not marked '# nosec BXXX # reason' =="
	$(VENV)/bin/bandit -c pyproject.toml -r . --quiet --severity-level medium
	@echo "== pip-audit: known vulnerabilities in the pinned requirements (a report; never fails the build) =="
	-timeout 180 $(VENV)/bin/pip-audit -r requirements.txt -r requirements-dev.txt --no-deps --disable-pip \
	  --strict --progress-spinner off --timeout 15 \
	  || echo "pip-audit: vulnerabilities listed above, or its data could not be reached (see the error); not a failure."

## Everything: lint, migration and deploy checks, then the whole test suite (DATABASE_URL picks the database).
test: $(VENV)/.dev browser lint checks
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(PY) bench/upload.py
	$(PY) bench/grading.py

clean:
	rm -rf $(VENV) media db.sqlite3 staticfiles artifacts .pytest_cache .ruff_cache
