"""Settings, all from the environment. See docs/operations.md, "Configuration", for each variable.

DEBUG is off unless asked for; SECRET_KEY is required unless DEBUG is on (then a random
development key, made once and kept in backend/server/.dev-secret-key).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from server.env import (
    STATUSES,
    development_secret_key,
    env_bool,
    env_cache,
    env_choice,
    env_float,
    env_int,
    env_json,
    env_list,
    env_rate,
    env_str,
    env_token,
)

# Classes that are generic only for the type checker (the admin's ModelAdmin[Model]...)
# must also accept a subscript at runtime.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent  # backend/server
REPO_DIR = BASE_DIR.parent.parent

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or DEBUG=1 for development)."
        )
    # Development: a random key made once per checkout and kept in a file only its owner
    # reads (git ignores it), so feedback tokens survive restarts but nobody can forge
    # them from a key written in this repository.
    SECRET_KEY = development_secret_key(
        Path(os.environ.get("DEV_SECRET_KEY_FILE") or BASE_DIR / ".dev-secret-key")
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here rather than a CDN
    "axes",  # failed logins and lockouts ("Login attempts" below)
    "apps.endpoints",
    "apps.ml",
    "apps.ops",
]

MIDDLEWARE = [
    "server.request_id.RequestIdMiddleware",  # first: the id is on every log line after it
    "apps.ops.middleware.ProbeMiddleware",  # /healthz, /readyz, /metrics; before host checks
    "apps.ops.middleware.MetricsMiddleware",
    # The wire protocols' prediction routes read their (larger) bodies here, before
    # anything else reads a body under MAX_BODY_BYTES.
    "server.bodies.ProtocolBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files (collected by `collectstatic`) in production, where
    # Django itself does not; right after SecurityMiddleware, as whitenoise documents.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes documents: turns a login form's lockout into its 429 page. It reads one
    # flag on the request after the view: no query, nothing on requests without a login.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "server.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "server.wsgi.application"

# -- Database ----------------------------------------------------------------------------
# DATABASE_URL picks the engine: sqlite:////abs/path.sqlite3 or postgres://user@host/db.
# The default is a SQLite file beside manage.py.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        # Re-check a kept connection before use, so the service recovers by itself when
        # the database comes back after an outage.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, but the health check above asks the socket before it pings the
    # server: no round trip per request while the connection is quiet (server/postgresql).
    # DB_HEALTH_CHECK=ping keeps Django's own check, a SELECT 1 before each request.
    if env_choice("DB_HEALTH_CHECK", "socket", ("socket", "ping")) == "socket":
        DATABASES["default"]["ENGINE"] = "server.postgresql"
    # A host that drops packets (rather than refusing) must not hold a request until
    # gunicorn's timeout: connecting gives up after DB_CONNECT_TIMEOUT seconds -> 503.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DB_CONNECT_TIMEOUT", 5
    )
    # Parameters bound by the server (psycopg 3's own cursors), so that a statement run
    # again and again (the predict INSERT) is prepared once per connection and then only
    # executed: about 30 us less per prediction, measured with bench/log_scale.py.
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = env_bool(
        "DB_SERVER_SIDE_BINDING", True
    )
    # "off": a commit returns before its WAL reaches the disk. A PostgreSQL crash (not a
    # service crash) may then lose the last ~0.6 s of committed rows, never corrupt them;
    # each prediction's commit waits ~0.1 ms less. Durable by default.
    if env_choice("DB_SYNCHRONOUS_COMMIT", "on", ("on", "off")) == "off":
        DATABASES["default"]["OPTIONS"]["options"] = "-c synchronous_commit=off"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Every prediction writes a row, and several worker processes write at once: WAL lets
    # readers and a writer overlap, IMMEDIATE takes the write lock at BEGIN (no deadlock
    # on lock upgrade), and a busy timeout makes writers wait instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- Cache -------------------------------------------------------------------------------
# Holds the throttling counts. The default is per process; CACHE_URL=redis://... or db://
# shares them between workers and machines (docs/operations.md, "Access"). CACHE_KEY_PREFIX
# keeps two services on one Redis apart.
CACHES = {"default": {**env_cache("CACHE_URL"), "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "")}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Batch jobs' files (the upload, each chunk's output, the result): a folder every
    # worker reads and writes (on several machines, a shared one), or any Django storage
    # by BATCH_JOB_STORAGE, e.g. S3 through django-storages (docs/batch.md, "Batch jobs").
    "batch_jobs": env_json(
        "BATCH_JOB_STORAGE",
        {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {
                "location": env_str("BATCH_JOB_STORAGE_PATH", str(BASE_DIR / "batch-jobs"))
            },
        },
    ),
    # Where `manage.py prune_requests --archive` writes the log rows it deletes (gzipped
    # CSV): a folder by LOG_ARCHIVE_PATH, or any Django storage by LOG_ARCHIVE_STORAGE.
    "log_archive": env_json(
        "LOG_ARCHIVE_STORAGE",
        {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": env_str("LOG_ARCHIVE_PATH", str(BASE_DIR / "log-archive"))},
        },
    ),
    # Compressed copies, but no hashed names: a manifest would make every admin page fail
    # with DEBUG off until collectstatic has run (tests, `DEBUG=0 make run`).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Model artifacts every app host can read (apps/ml/shared_store.py): a shared folder
# (MODEL_STORAGE_PATH) or any Django storage (MODEL_STORAGE, JSON). Unset: one host, whose
# MODEL_ARTIFACTS_PATH holds them. Set: each host's MODEL_ARTIFACTS_PATH is its cache.
if env_str("MODEL_STORAGE", "") or env_str("MODEL_STORAGE_PATH", ""):
    STORAGES["model_artifacts"] = env_json(
        "MODEL_STORAGE",
        {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": env_str("MODEL_STORAGE_PATH", "")},
        },
    )

# -- Machine learning --------------------------------------------------------------------
_artifacts = os.environ.get("MODEL_ARTIFACTS_PATH") or str(REPO_DIR / "research" / "artifacts")
if not os.path.isabs(_artifacts):
    raise ImproperlyConfigured(
        f"MODEL_ARTIFACTS_PATH must be an absolute path; got {_artifacts!r}."
    )
MODEL_ARTIFACTS_PATH = Path(_artifacts).resolve()

# Register the demo models (apps/endpoints/catalogue/demo.py): two Adult income classifiers, a
# diabetes regressor and a wine classifier, one endpoint per task.
ML_DEMO_MODELS = env_bool("ML_DEMO_MODELS", True)

# Model files. A .skops file is loaded with skops, which refuses any type outside its own
# safe defaults and this list; the operator owns the list, never the file (docs/models.md,
# "Adding your own model"). Each type below was reviewed: scikit-learn's fitted-state
# containers, rebuilt from arrays, that common models need and skops' defaults leave out
# (measured with skops 0.16 and scikit-learn 1.9). SKOPS_TRUSTED_TYPES (comma-separated)
# adds more.
SKOPS_REVIEWED_TYPES = (
    "numpy.dtype",  # a ColumnTransformer's and an encoder's dtypes
    "sklearn.tree._tree.Tree",  # every tree and tree ensemble
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # HistGradientBoosting
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # MLPClassifier/Regressor
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.neighbors._kd_tree.KDTree",  # nearest neighbours
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
)
SKOPS_TRUSTED_TYPES = (*SKOPS_REVIEWED_TYPES, *env_list("SKOPS_TRUSTED_TYPES", []))
# A joblib (pickle) file runs code when it is loaded: uploads over HTTP and the admin are
# refused unless the operator allows them. manage.py register_model always takes them.
ALLOW_PICKLE_UPLOADS = env_bool("ALLOW_PICKLE_UPLOADS", False)
MODEL_MAX_UPLOAD_BYTES = env_int("MODEL_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)
# What a .skops file (a zip) may unpack to, all members together, checked before skops
# inflates them into memory: a member that inflated to 1.6 GB took 3.3 GB before skops
# refused the file. skops writes members uncompressed by default, so a file under the
# upload limit unpacks to about its own size; twice the limit leaves room for files saved
# compressed. Registrations from the host (manage.py register_model) are held to it too.
MODEL_MAX_UNPACKED_BYTES = env_int(
    "MODEL_MAX_UNPACKED_BYTES", 2 * MODEL_MAX_UPLOAD_BYTES, minimum=1
)

# Serve models through a verified ONNX Runtime form where skl2onnx converts them and the
# result reproduces scikit-learn (a forest: about 0.05 ms instead of 10-20 ms for one
# row); off: scikit-learn only. See apps/ml/compiled.py.
ML_COMPILED_INFERENCE = env_bool("ML_COMPILED_INFERENCE", True)

# The status predict uses when the client does not pass ?status=. The upstream design
# used "production": a client that names nothing gets the production model.
# Any status but "shadow", which never answers a client.
PREDICT_DEFAULT_STATUS = env_choice(
    "PREDICT_DEFAULT_STATUS", "production", tuple(s for s in STATUSES if s != "shadow")
)

# How long a worker may reuse its answer to "which algorithm serves this endpoint and
# status": a status change reaches the other workers within this many seconds (the worker
# that made it, at once). 0 looks it up on every request.
PREDICT_CACHE_SECONDS = env_float("PREDICT_CACHE_SECONDS", 1.0)

# Shadows (docs/shadows.md): how many copies of predictions may wait in each process for
# the shadow to score them; past that, copies are dropped (and counted), never the
# client's answer delayed. 1,000 copies are a few seconds of a busy worker's traffic.
SHADOW_QUEUE_SIZE = env_int("SHADOW_QUEUE_SIZE", 1000)

# Drift monitoring (docs/drift.md): each version's last DRIFT_WINDOW scored records (single
# predictions, batch rows and job rows, refused ones too) against its reference profile.
# Off: nothing is recorded on the request path (the reports say so).
DRIFT_MONITORING = env_bool("DRIFT_MONITORING", True)
DRIFT_WINDOW = env_int("DRIFT_WINDOW", 5000, minimum=1)
# No feature is flagged before the window holds this many records.
DRIFT_MIN_RECORDS = env_int("DRIFT_MIN_RECORDS", 500, minimum=1)
# A reference sample needs this many rows for a profile; an input example, the second
# number (it was chosen to show a few rows, not to describe the world).
DRIFT_MIN_REFERENCE_ROWS = env_int("DRIFT_MIN_REFERENCE_ROWS", 100, minimum=1)
DRIFT_MIN_EXAMPLE_ROWS = env_int("DRIFT_MIN_EXAMPLE_ROWS", 500, minimum=1)
DRIFT_REFERENCE_MAX_BYTES = env_int("DRIFT_REFERENCE_MAX_BYTES", 64 * 1024 * 1024)
# How often each process writes the records it scored to the shared window (0: only when
# the window is read, which the tests use).
DRIFT_FLUSH_SECONDS = env_float("DRIFT_FLUSH_SECONDS", 1.0)
# The floors of the thresholds (the fitted ones, from each reference, may be higher).
DRIFT_PSI = env_float("DRIFT_PSI", 0.2)
DRIFT_WASSERSTEIN = env_float("DRIFT_WASSERSTEIN", 0.1)
DRIFT_JS = env_float("DRIFT_JS", 0.1)
DRIFT_UNSEEN_SHARE = env_float("DRIFT_UNSEEN_SHARE", 0.05)
DRIFT_INVALID_SHARE = env_float("DRIFT_INVALID_SHARE", 0.05)
DRIFT_OUT_OF_RANGE_SHARE = env_float("DRIFT_OUT_OF_RANGE_SHARE", 0.05)
DRIFT_MISSING_POINTS = env_float("DRIFT_MISSING_POINTS", 0.10)

# Batch predictions (POST /api/v1/batch-predict). The defaults admit the 1M-row benchmark
# file (about 120 MB); lower them where uploads come from untrusted clients.
BATCH_MAX_UPLOAD_BYTES = env_int("BATCH_MAX_UPLOAD_BYTES", 256 * 1024 * 1024)
BATCH_MAX_ROWS = env_int("BATCH_MAX_ROWS", 2_000_000)
BATCH_CHUNK_ROWS = env_int("BATCH_CHUNK_ROWS", 10_000)
# A batch of at least MODEL_PARALLEL_ROWS rows is predicted in up to MODEL_THREADS parts
# at once (apps/ml/parallel.py); MODEL_THREADS=1 keeps every model call on one thread.
MODEL_THREADS = env_int("MODEL_THREADS", 2, minimum=1)
MODEL_PARALLEL_ROWS = env_int("MODEL_PARALLEL_ROWS", 2_000, minimum=2)
# ...or fewer, so that a chunk holds about this many bytes of the file: memory is bounded
# by a chunk's bytes, whatever the width of its rows (10k Adult rows are about 1.1 MB).
BATCH_CHUNK_BYTES = env_int("BATCH_CHUNK_BYTES", 16 * 1024 * 1024)
# Columns in a batch file; more is a 413 before any row is read. A model with more
# features needs it raised.
BATCH_MAX_COLUMNS = env_int("BATCH_MAX_COLUMNS", 1000)
# Batch jobs (POST /api/v1/batch-jobs): files scored in the background in pieces of
# BATCH_JOB_CHUNK_ROWS rows, each a task (apps/endpoints/batch/jobs.py, tasks.py).
BATCH_JOB_MAX_UPLOAD_BYTES = env_int("BATCH_JOB_MAX_UPLOAD_BYTES", 2 * 1024**3)
BATCH_JOB_MAX_ROWS = env_int("BATCH_JOB_MAX_ROWS", 20_000_000, minimum=1)
BATCH_JOB_CHUNK_ROWS = env_int("BATCH_JOB_CHUNK_ROWS", 50_000, minimum=1)
# Tries of a piece that fails for a reason other than its content (the database or the
# storage away): then the job fails with the reason, and its partial outputs are removed.
BATCH_JOB_MAX_RETRIES = env_int("BATCH_JOB_MAX_RETRIES", 3, minimum=0)
BATCH_JOB_RETENTION_DAYS = env_int("BATCH_JOB_RETENTION_DAYS", 7, minimum=1)
# A piece being scored holds a lease that its worker renews every HEARTBEAT seconds; a
# piece whose lease lapsed (LEASE seconds without a renewal: its worker is gone) is sent
# again by the first worker to notice, which every worker looks for every HEARTBEAT
# seconds (batch/leases.py). A worker lost for good costs its job LEASE + HEARTBEAT
# seconds and the piece's time; a slow worker renews, and is never pre-empted.
BATCH_JOB_LEASE_SECONDS = env_int("BATCH_JOB_LEASE_SECONDS", 30, minimum=2)
BATCH_JOB_HEARTBEAT_SECONDS = env_float("BATCH_JOB_HEARTBEAT_SECONDS", 5.0)
if not 0 < BATCH_JOB_HEARTBEAT_SECONDS <= BATCH_JOB_LEASE_SECONDS / 2:
    raise ImproperlyConfigured(
        "BATCH_JOB_HEARTBEAT_SECONDS must be above 0 and at most half of "
        f"BATCH_JOB_LEASE_SECONDS ({BATCH_JOB_LEASE_SECONDS}): a lease must outlive a "
        "late heartbeat."
    )
# -- Bounds for clients that do not sign in, in production (DEBUG off): a default rate, a
# smaller upload than signed-in clients get, a cap on unfinished batch jobs. With DEBUG on
# (make run, a laptop) none of them applies unless set. Each is a setting; 0 or an empty
# rate means no bound (docs/operations.md, "Bounds for anonymous clients").
_BOUNDED = not DEBUG
ANONYMOUS_PREDICT_THROTTLE_RATE = env_rate(
    "ANONYMOUS_PREDICT_THROTTLE_RATE", "100/second" if _BOUNDED else None
)
ANONYMOUS_BATCH_MAX_UPLOAD_BYTES = env_int(
    "ANONYMOUS_BATCH_MAX_UPLOAD_BYTES", 16 * 1024**2 if _BOUNDED else 0, minimum=0
)
ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES = env_int(
    "ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES", 128 * 1024**2 if _BOUNDED else 0, minimum=0
)
# Per client (a user; an address for anonymous clients): jobs queued or running, and
# their rows. Past either, a new job is a 429 until one ends.
BATCH_JOB_MAX_ACTIVE = env_int("BATCH_JOB_MAX_ACTIVE", 5 if _BOUNDED else 0, minimum=0)
BATCH_JOB_MAX_ACTIVE_ROWS = env_int(
    "BATCH_JOB_MAX_ACTIVE_ROWS", 20_000_000 if _BOUNDED else 0, minimum=0
)
# A replaced feedback value (FeedbackRevision) is kept this many days; 0 keeps them all.
# Deleted by `manage.py prune_requests` and the beat's daily prune_requests task.
FEEDBACK_REVISION_RETENTION_DAYS = env_int("FEEDBACK_REVISION_RETENTION_DAYS", 90, minimum=0)
# The request log keeps a row this many days (`manage.py prune_requests`, and the beat
# below); 0, the default, keeps every row. Rows of a running A/B test are always kept.
MLREQUEST_RETENTION_DAYS = env_int("MLREQUEST_RETENTION_DAYS", 0, minimum=0)
# With the beat's pruning, archive the rows first (to the log_archive storage).
MLREQUEST_ARCHIVE = env_bool("MLREQUEST_ARCHIVE", False)

# -- Celery: the workers that run batch jobs (`make worker`). Without CELERY_BROKER_URL the
# web process runs them itself, on a thread, with the same task code (the embedded default
# of `make run`). A task is acknowledged after it ran, so a worker killed mid-task leaves
# it to another; pieces are idempotent (jobs.py).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
CELERY_TASK_DEFAULT_QUEUE = env_str("BATCH_JOB_QUEUE", "ml_pipeline.batch_jobs")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # progress lives in the database
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis: an unacknowledged task goes back to the queue after this many seconds without its
# worker (killed, or cut off); longer than any one piece takes.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("BATCH_JOB_VISIBILITY_TIMEOUT", 600, minimum=1)
}
# What `celery -A server beat` (`make beat`, one per deployment) sends by itself: retention
# once a day at 03:30 UTC (a time of day, so a beat restarted daily still runs it; without
# a beat, cron `manage.py delete_old_jobs`). Not resume_stalled: it picks jobs by age, not
# by their last progress, and would send a long job's pieces again every time.
CELERY_BEAT_SCHEDULE = {
    "delete-old-batch-jobs": {
        # Task names as they were before the batch room existed: a beat's entries and
        # queued messages name them (batch/tasks.py keeps them).
        "task": "apps.endpoints.tasks.delete_old_jobs",
        "schedule": crontab(hour=3, minute=30),
    },
    # Sent every day; it does nothing while MLREQUEST_RETENTION_DAYS is 0.
    "prune-request-log": {
        "task": "apps.endpoints.tasks.prune_requests",
        "schedule": crontab(hour=3, minute=45),
    },
}

# CSV answers (batch-predict, batch jobs' results): a cell that starts with =, +, -, @, a
# tab or a carriage return and is not a number gets a leading ' so that a spreadsheet
# shows it rather than runs it (apps/endpoints/batch/output.py). Off for pipelines that
# read the answer back and need the cells exactly as they were sent.
CSV_ESCAPE_FORMULAS = env_bool("CSV_ESCAPE_FORMULAS", True)

# Per endpoint, the CSV column holding the true value, where the algorithm was registered
# without a target column: stored as feedback, scored.
BATCH_LABEL_COLUMNS: dict[str, str] = env_json("BATCH_LABEL_COLUMNS", {})

# The largest request body outside file uploads (Django's DATA_UPLOAD_MAX_MEMORY_SIZE): a
# predict record is under 1 KB; more is a 413. Batch files have their own limit below.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_BODY_BYTES", 256 * 1024)
# ...except on the wire protocols' prediction routes (/v2/models/.../infer, .../invocations),
# whose JSON carries a batch: 10,000 Adult rows are about 1.4 MB (server/bodies.py).
PROTOCOL_MAX_BODY_BYTES = env_int("PROTOCOL_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1)

# Who may predict, batch-predict and send feedback: "open" (anyone who can reach the
# service, the default: it usually sits behind a gateway that decides that) or "token"
# (an authenticated user: a DRF token, HTTP Basic or a session). See docs/operations.md, "Access".
PREDICT_ACCESS = env_choice("PREDICT_ACCESS", "open", ("open", "token"))

# Who may give feedback (the ground truth that decides A/B tests): "token" (whoever holds
# the request's feedback_token, the default), "authenticated" (a logged-in holder of it) or
# "staff" (operators only). Operators may always give it, without tokens. See docs/api.md,
# "Feedback", and apps/endpoints/serving/feedback.py.
FEEDBACK_ACCESS = env_choice("FEEDBACK_ACCESS", "token", ("token", "authenticated", "staff"))

# The bearer token /metrics asks for (Prometheus: `authorization: {credentials: ...}`);
# without it a scrape gets 401. Unset (the default), /metrics is open like /healthz: keep
# it off the public internet at the proxy then. See docs/operations.md, "Metrics". The same
# token reads what /readyz's checks found (versions, pid, problems); anyone else hears only
# ready or not, and without a token only a DEBUG server says more.
METRICS_TOKEN = env_token("METRICS_TOKEN")

# -- HTTPS and cookies. With DEBUG off (production), cookies are Secure and HSTS is on for
# a year, subdomains included; browsers ignore HSTS over plain HTTP and send Secure
# cookies to http://localhost, so `DEBUG=0 make run` still works. With DEBUG on, all off.
# Left to the deployment, because they depend on it: the redirect to HTTPS (behind a TLS
# proxy it also needs SECURE_PROXY_SSL_HEADER) and HSTS preloading (a commitment to the
# browsers' list). With those two, `manage.py check --deploy` is clean (docs/operations.md,
# "Production"; test_access checks both).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):  # only behind a proxy that sets it
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# -- REST framework ----------------------------------------------------------------------
REST_FRAMEWORK: dict[str, Any] = {
    # Token first: an anonymous request is answered 401 with "WWW-Authenticate: Token",
    # which tells API clients what to send and makes no browser pop up a login dialog.
    # Token and Basic: DRF's, with the lockout of failed logins (endpoints/login_attempts.py).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.endpoints.api.login_attempts.LockoutTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "apps.endpoints.api.login_attempts.LockoutBasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.endpoints.policy.Operators"],
    "DEFAULT_PARSER_CLASSES": [
        "apps.endpoints.api.parsers.JSONParser",  # DRF's, refusing lone surrogates
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "apps.endpoints.api.errors.handle",
    # Docstrings shown as text, their ``code`` as code (not as reStructuredText markup).
    "VIEW_DESCRIPTION_FUNCTION": "apps.endpoints.api.descriptions.view_description",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Per-client request rates ("100/second", "6000/minute"), by the view's throttle_scope;
    # unset means no limit. Clients are users, else IP addresses; counts are kept in the
    # cache (CACHE_URL), and requests are let through while it is down (docs/operations.md).
    "DEFAULT_THROTTLE_CLASSES": [
        "apps.endpoints.api.throttling.FailOpenScopedRateThrottle",
        "apps.endpoints.api.throttling.AnonymousRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "predict": env_rate("PREDICT_THROTTLE_RATE"),
        "management": env_rate("MANAGEMENT_THROTTLE_RATE"),
        # Clients that do not sign in, on top of the above (AnonymousRateThrottle).
        "predict_anonymous": ANONYMOUS_PREDICT_THROTTLE_RATE,
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many proxies in front of the service append to X-Forwarded-For: the client is the
    # entry the farthest of them wrote. 0 (the default): the peer address (REMOTE_ADDR),
    # and the header is ignored. DRF's own default (None) trusts the whole header, which
    # any client writes: a new value per request escaped every rate. Also the address
    # that login lockouts count (apps/endpoints/policy.py, client_address).
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0),
}

# -- Login attempts ----------------------------------------------------------------------
# django-axes counts failed logins (the admin's and the browsable API's login forms, HTTP
# Basic) per user name and per address: LOGIN_FAILURE_LIMIT failures for a name, or from
# an address, lock it for LOGIN_LOCKOUT_MINUTES, during which even the right password is
# refused and no password is hashed. Wrong tokens are counted per address in the cache
# instead. `manage.py axes_reset` unlocks (docs/operations.md, "Access").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked login before hashing
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
# A name guessed at from one address locks that pair; an address guessing many names locks
# the address. A name alone locks only past a much higher count, from any addresses
# (login_attempts.LoginAttemptsHandler): operator names are public, and at the low limit
# anyone could lock an operator out from everywhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
LOGIN_NAME_FAILURE_LIMIT = env_int(
    "LOGIN_NAME_FAILURE_LIMIT", 10 * AXES_FAILURE_LIMIT, minimum=AXES_FAILURE_LIMIT
)
# The address rates use: X-Forwarded-For counts only as far as NUM_PROXIES says.
AXES_CLIENT_IP_CALLABLE = "apps.endpoints.policy.client_address"
# Counts in the database, not the cache: shared by all workers without CACHE_URL (the
# default per-process cache would give each worker its own limit), listed in the admin
# ("Access attempts"), and cleared by `manage.py axes_reset`. A request without a login
# costs nothing; HTTP Basic, two indexed queries per request (docs/operations.md, "Access").
AXES_HANDLER = "apps.endpoints.api.login_attempts.LoginAttemptsHandler"
# The lock lasts LOGIN_LOCKOUT_MINUTES from the failure that set it, however often the
# client tries meanwhile: tries during the lock are neither hashed nor counted.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A successful login forgets that name's failures from that address only
# (login_attempts.forget_own_failures). axes' reset would also forget every failure from
# the address: anyone with an account could log in between guesses at other names.
AXES_RESET_ON_SUCCESS = False
# A locked login form answers a plain 429 with Retry-After (the API: the JSON error shape).
AXES_LOCKOUT_CALLABLE = "apps.endpoints.api.login_attempts.lockout_response"

# OpenAPI schema at /api/v1/schema, Swagger UI at /api/v1/docs (drf-spectacular).
SPECTACULAR_SETTINGS = {
    "TITLE": "ML_PipeLine API",
    "DESCRIPTION": "Prediction endpoints for trained scikit-learn models (README.md).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Tags and operation ids from the path after /api/v1, as before routes outside it (MLflow's
    # /invocations) came in: left to estimate, the common prefix would become "/".
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Every operation also documents the errors the framework answers around its view
    # (401, 404, 406, 503; 400, 403, 413, 415 with a body; 429 when throttled).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",  # the default
        "apps.endpoints.api.openapi.add_error_responses",
        "apps.endpoints.api.openapi.add_endpoint_paths",  # after: the copies carry the errors
    ],
}

# What the debug error page (make run) and error reports show: Django's filter hides names
# with KEY, SECRET, PASS...; this one also DATABASE_URL, CELERY_BROKER_URL and any
# password in a credential URL, which runserver's request.META (the whole environment)
# and the settings held (server/error_reports.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "server.error_reports.SecretsFilter"

# -- Logging: everything to stdout, one line each, with the request id -------------------
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "server.request_id.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"}
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",  # StreamHandler's default is stderr
            "filters": ["request_id"],
            "formatter": "plain",
        }
    },
    "root": {"handlers": ["stdout"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default config gives "django" its own console handler when DEBUG is on;
        # with ours on the root as well, each line printed twice under `make run`.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}
