# Two commands on a fresh machine with Python 3.11+:
#   make run    set up .venv, train the demo models if missing, migrate, serve on 127.0.0.1:$PORT
#   make test   set up .venv and run the test suite (SQLite unless DATABASE_URL says otherwise)
#   make check  set up .venv, then ruff (format, lint) and mypy as pyproject.toml configures them
#   make serve  production: gunicorn after migrate and collectstatic (needs SECRET_KEY)
#   make proxy  nginx in front of make serve, configured by deploy/nginx/ml_pipeline.conf
#   make worker a Celery worker for batch jobs (needs CELERY_BROKER_URL; make run alone runs
#               them itself); as many per machine as you like, each named by its pid
#               unless WORKER_NAME names it
#   make beat   Celery beat, one per deployment: old batch jobs deleted daily
#               (CELERY_BEAT_SCHEDULE; needs CELERY_BROKER_URL)

PYTHON ?= python3
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
INSTALLED := $(VENV)/.installed-requirements
PORT ?= 8000
PROXY_PORT ?= 8080
ARTIFACTS := $(or $(MODEL_ARTIFACTS_PATH),$(CURDIR)/research/artifacts)
MANAGE := cd backend/server && $(PY) manage.py
# The development server runs with DEBUG on unless the caller sets DEBUG itself.
DEV_ENV := export DEBUG=$${DEBUG:-1} MODEL_ARTIFACTS_PATH=$(ARTIFACTS);

.PHONY: run serve proxy worker beat test check fuzz train venv migrate superuser token clean

$(INSTALLED): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "ML_PipeLine needs Python 3.11 or newer (PYTHON=$(PYTHON))."; exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(INSTALLED)

# Train only what is missing (the Adult forests take about a minute on 2 cores, the other
# demo models a second); `make train` retrains everything.
ADULT_MODELS := $(ARTIFACTS)/random_forest.joblib $(ARTIFACTS)/extra_trees.joblib \
	$(ARTIFACTS)/adult_reference.csv
OTHER_MODELS := $(ARTIFACTS)/diabetes.joblib $(ARTIFACTS)/wine.skops \
	$(ARTIFACTS)/diabetes_reference.csv $(ARTIFACTS)/wine_reference.csv
DEMO_MODELS := $(ADULT_MODELS) $(OTHER_MODELS)

$(ADULT_MODELS): | $(INSTALLED)
	$(PY) research/train.py --out $(ARTIFACTS) --only adult

$(OTHER_MODELS): | $(INSTALLED)
	$(PY) research/train.py --out $(ARTIFACTS) --only sklearn

train: $(INSTALLED)
	$(PY) research/train.py --out $(ARTIFACTS)

migrate: $(INSTALLED) $(DEMO_MODELS)
	$(DEV_ENV) $(MANAGE) migrate --noinput

run: migrate
	$(DEV_ENV) cd backend/server && exec $(PY) manage.py runserver --noreload 127.0.0.1:$(PORT)

# Production: DEBUG off, SECRET_KEY from the environment, gunicorn on $(HOST):$(PORT) (HOST
# defaults to 127.0.0.1) with WEB_CONCURRENCY workers of GUNICORN_THREADS threads
# (backend/server/bin/serve).
serve: $(INSTALLED) $(DEMO_MODELS)
	@test -n "$$SECRET_KEY" || { echo "make serve needs SECRET_KEY in the environment."; exit 1; }
	export MODEL_ARTIFACTS_PATH=$(ARTIFACTS) PORT=$(PORT) PYTHON=$(PY); \
		exec backend/server/bin/serve

# nginx (Debian's package) in the foreground on 127.0.0.1:$(PROXY_PORT), in front of
# `make serve` on $(PORT): deploy/nginx/ml_pipeline.conf as shipped but for the ports and
# the access log, its files in a temporary folder (deploy/nginx/local.py; the tests in
# apps/ops/tests/test_slow_clients.py run it the same way). Start `make serve` with
# NUM_PROXIES=1 behind it, so that rates and login locks key on each client's address.
proxy:
	exec $(PYTHON) deploy/nginx/local.py --port $(PROXY_PORT) --upstream-port $(PORT)

# A Celery worker for batch jobs (apps/endpoints/batch/tasks.py), from the broker at
# CELERY_BROKER_URL (redis://... or amqp://...), WORKER_CONCURRENCY processes; DEBUG as for
# make run unless set (production: DEBUG=0 SECRET_KEY=...). One per machine, or several:
# each is named worker-<its pid>@<host> (the shell's $$, kept by exec) unless WORKER_NAME
# names it (%h: the host). Celery's own default, celery@<host>, gave every worker of a host
# one name, and RabbitMQ lets only one of them hold the name's control queue: the second
# exited (ResourceLocked).
worker: $(INSTALLED) $(DEMO_MODELS)
	@test -n "$$CELERY_BROKER_URL" || { echo "make worker needs CELERY_BROKER_URL (without it, make run runs batch jobs itself)."; exit 1; }
	$(DEV_ENV) cd backend/server && exec $(PY) -m celery -A server worker --loglevel INFO \
		--queues $${BATCH_JOB_QUEUE:-ml_pipeline.batch_jobs} --concurrency $${WORKER_CONCURRENCY:-2} \
		-n "$${WORKER_NAME:-worker-$$$$@%h}"

# Celery beat: sends the tasks of CELERY_BEAT_SCHEDULE (settings.py) to the workers:
# delete_old_jobs daily (BATCH_JOB_RETENTION_DAYS) and prune_requests daily (when
# MLREQUEST_RETENTION_DAYS is set). Run exactly one per deployment (two would send
# everything twice); DEBUG as for make worker. Without it, run `manage.py delete_old_jobs`
# and `manage.py prune_requests` daily from cron.
beat: $(INSTALLED)
	@test -n "$$CELERY_BROKER_URL" || { echo "make beat needs CELERY_BROKER_URL."; exit 1; }
	$(DEV_ENV) cd backend/server && exec $(PY) -m celery -A server beat --loglevel INFO

superuser: migrate
	$(DEV_ENV) $(MANAGE) createsuperuser

# The API token of user NAME (made on first use, the same key after), for scripts:
# `Authorization: Token <key>`. HTTP Basic hashes the password on every request (PBKDF2,
# a few hundred milliseconds of CPU); a token is one indexed lookup.
token: $(INSTALLED)
	@test -n "$(NAME)" || { echo "usage: make token NAME=<username>" >&2; exit 1; }
	@$(DEV_ENV) export LOG_LEVEL=WARNING; $(MANAGE) api_token "$(NAME)"

test: $(INSTALLED)
	$(PY) -m pytest

# The formatter, the linter and the type checker; .ci/run runs this before the tests.
check: $(INSTALLED)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy backend/server research bench deploy

# schemathesis against the OpenAPI schema and a live gunicorn on a temp database (.ci/fuzz).
fuzz: $(INSTALLED) $(DEMO_MODELS)
	MODEL_ARTIFACTS_PATH=$(ARTIFACTS) PY=$(PY) .ci/fuzz

clean:
	rm -rf $(VENV) research/artifacts backend/server/db.sqlite3*
