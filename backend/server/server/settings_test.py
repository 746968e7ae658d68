"""Test settings: the normal settings with a fixed key and a file-backed SQLite test DB.

A file (not SQLite's shared in-memory database) lets the concurrency tests use real threads
and a second process see the same data, with WAL and the busy timeout as in production.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")

from server.settings import *  # noqa: F403
from server.settings import DATABASES, REST_FRAMEWORK

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"ml_pipeline_test_{os.getpid()}.sqlite3")
    }

# Tests register the models they need (fixtures in conftest.py), not the demo models.
ML_DEMO_MODELS = False
# Models are served by scikit-learn unless a test compiles them: the compiled path has
# tests of its own (apps/ml/tests/test_compiled.py, test_generic_compiled.py).
ML_COMPILED_INFERENCE = False
# Every test builds its own catalogue; a selection cached by one must not leak to the next.
PREDICT_CACHE_SECONDS = 0.0

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation

# Tests run without collectstatic; autorefresh makes whitenoise look for files per request
# instead of warning, at start-up, that STATIC_ROOT does not exist.
WHITENOISE_AUTOREFRESH = True

# Whatever CACHE_URL the shell exports: tests clear the cache, which on a shared Redis would
# be FLUSHDB. Tests that need another cache set it themselves.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Whatever METRICS_TOKEN the shell exports: tests of /metrics set the token they need.
METRICS_TOKEN = ""

# The bounds for anonymous clients apply with DEBUG off, as in tests: off here, so that a
# test's hundreds of requests from one address are not throttled nor its jobs capped. Their
# tests set them (apps/endpoints/tests/apis/test_anonymous_bounds.py, which also checks the
# production defaults).
ANONYMOUS_BATCH_MAX_UPLOAD_BYTES = 0
ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES = 0
BATCH_JOB_MAX_ACTIVE = 0
BATCH_JOB_MAX_ACTIVE_ROWS = 0
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["predict_anonymous"] = None

# Drift records are written when a window is read (by the process that holds them), not by
# a thread: a thread's connection would not see a test's uncommitted catalogue.
DRIFT_FLUSH_SECONDS = 0.0
