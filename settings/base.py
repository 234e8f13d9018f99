"""Settings shared by every run of the Grading Center.

Every value that differs between machines comes from an environment variable
with a default that suits the embedded run (SQLite, files under ./media). The
README lists them all.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from boto3.s3.transfer import TransferConfig
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def lockout_parameters(value: str) -> list:
    """`username,ip_address` locks either one; `username+ip_address` locks only the pair."""
    known = {"username", "ip_address", "user_agent"}
    parameters = []
    for item in (part.strip() for part in value.split(",") if part.strip()):
        names = [name.strip() for name in item.split("+")]
        if not set(names) <= known:
            raise ImproperlyConfigured(f"LOGIN_LOCKOUT_BY takes {', '.join(sorted(known))}, not {item!r}")
        parameters.append(names if len(names) > 1 else names[0])
    if not parameters:
        raise ImproperlyConfigured("LOGIN_LOCKOUT_BY must name at least one of username, ip_address")
    return parameters


CACHE_TABLE = "gc_cache"


def cache_settings(backend: str) -> dict:
    """`database` shares the cache (login and reset throttling) between servers; `local`: one process."""
    if backend == "database":
        # The table is made by the accounts migrations (`manage.py migrate`), no createcachetable needed.
        return {
            "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": CACHE_TABLE}
        }
    if backend == "local":
        return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    raise ImproperlyConfigured(f"CACHE_BACKEND must be 'database' or 'local', not {backend!r}")


SECRET_KEY = env("DJANGO_SECRET_KEY", "embedded-run-only-not-secret")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "jazzmin",
    "grading.apps.GradingCenterAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_tasks",
    "django_tasks_db",
    "storages",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    "health_check",
    "axes",
    "csp",
    "studies",
    "grading",
    "exports",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before any view or the CSRF check reads an upload: an unreadable one gets a page saying why.
    "studies.middleware.UnreadableUploadMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a sign-in refused for too many failures into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# Database: SQLite in the project folder unless DATABASE_URL names another.
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and not env_bool("DATABASE_JIT", False):
    # PostgreSQL's JIT compiler costs more than it saves on these short queries and exports.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers queue for the lock from their first statement instead of failing on an upgrade
    # ("database is locked"): the embedded run's pool records photos while parts arrive.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 30})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "admin:index"

# Client addresses (sign-in lockout, login and password-reset throttling) come from
# X-Forwarded-For only past this many proxies, never from what the client claims.
NUM_PROXIES = env_int("API_NUM_PROXIES", 0)

# Sign-in lockout (django-axes), counted in the database so every app server shares it: after
# LOGIN_FAILURE_LIMIT failed sign-ins (admin or API) the username or the client address is refused,
# the right password included, until LOGIN_COOLOFF_MINUTES have passed since the last failure.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = lockout_parameters(env("LOGIN_LOCKOUT_BY", "username,ip_address"))
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the cool-off runs from the lockout, as the page says
# Not reset by a success: a valid account's sign-in would wipe its address's failures on other accounts.
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "accounts.throttling.client_address"
AXES_LOCKOUT_TEMPLATE = "accounts/lockout.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False

# Password reset: e-mails sent per address an hour, and requests per client address an hour; past
# either the page answers "e-mail sent" as always and sends nothing.
PASSWORD_RESET_EMAILS_PER_HOUR = env_int("PASSWORD_RESET_EMAILS_PER_HOUR", 3)
PASSWORD_RESET_REQUESTS_PER_HOUR = env_int("PASSWORD_RESET_REQUESTS_PER_HOUR", 20)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# Dates read "26 Nov 2026" everywhere (settings/formats/en/formats.py; Django's English formats otherwise,
# which a DATE_FORMAT setting here could not override).
FORMAT_MODULE_PATH = ["settings.formats"]

# Files. Images are private: local files are served by a permission-checked
# view under MEDIA_URL, S3 objects through short-lived pre-signed URLs.
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/files/"
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

AWS_STORAGE_BUCKET_NAME = env("S3_BUCKET")
if AWS_STORAGE_BUCKET_NAME:
    DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env("S3_ENDPOINT_URL") or None,
            "region_name": env("S3_REGION") or None,
            "access_key": env("S3_ACCESS_KEY_ID") or None,
            "secret_key": env("S3_SECRET_ACCESS_KEY") or None,
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": env_int("S3_URL_EXPIRY_SECONDS", 300),
            # keys are unique by construction: no name check (a HEAD request) before each write
            "file_overwrite": True,
            "signature_version": "s3v4",
            "addressing_style": env("S3_ADDRESSING_STYLE", "path"),
            "location": env("S3_PREFIX"),
        },
    }
else:
    DEFAULT_STORAGE = {
        "BACKEND": "studies.storage.PrivateFileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT, "base_url": MEDIA_URL},
    }

# Each file goes to S3 in one PutObject (an import's part is 8 MB): no multipart upload below 64 MB,
# and no thread pool per write (the writers already send IMPORT_STORAGE_THREADS at once).
AWS_S3_TRANSFER_CONFIG = TransferConfig(multipart_threshold=64 * 1024 * 1024, use_threads=False)


def s3_image_sources() -> list[str]:
    """Where the browser fetches photos from when they are on S3 (pre-signed URLs), for the CSP."""
    if not AWS_STORAGE_BUCKET_NAME:
        return []
    endpoint = urlsplit(env("S3_ENDPOINT_URL"))
    if not endpoint.netloc:
        return ["https://*.amazonaws.com"]
    origin = f"{endpoint.scheme}://{endpoint.netloc}"
    return [origin, f"{endpoint.scheme}://*.{endpoint.netloc}"]  # the second for virtual-host addressing


STORAGES = {
    "default": DEFAULT_STORAGE,
    # Not the manifest storage: Jazzmin's templates reference files that a
    # strict manifest cannot resolve.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads: files over 2.5 MB stream to temporary files, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("UPLOAD_MAX_FILES", 1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_PERMISSIONS = 0o640

# The image pipeline's limits.
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 50 * 1024 * 1024)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 60_000_000)
IMAGE_THUMBNAIL_SIZE = env_int("IMAGE_THUMBNAIL_SIZE", 400)
# Field-day imports: how large one uploaded part and one whole import may be.
IMPORT_PART_BYTES = env_int("IMPORT_PART_BYTES", 8 * 1024 * 1024)
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 20 * 1024 * 1024 * 1024)
# A ZIP's members may add up to this many times the ZIP's own size (and never past IMPORT_MAX_BYTES):
# photos barely compress, so more is a ZIP bomb. IMPORT_MAX_FILES: most entries in a ZIP or files in a folder.
IMPORT_MAX_EXPANSION = env_int("IMPORT_MAX_EXPANSION", 10)
IMPORT_MAX_FILES = env_int("IMPORT_MAX_FILES", 20_000)
# The storage sweep (`manage.py storage_sweep`, and the worker every STORAGE_SWEEP_EVERY_HOURS; 0: never):
# imports with no part for this long are abandoned, and files no row refers to go once this old.
STORAGE_SWEEP_AFTER_HOURS = env_int("STORAGE_SWEEP_AFTER_HOURS", 24)
STORAGE_SWEEP_EVERY_HOURS = env_int("STORAGE_SWEEP_EVERY_HOURS", 6)
# Import speed. IMPORT_PROCESSES: the embedded run's pool that prepares photos (0: in the request's
# thread); IMPORT_STORAGE_THREADS: photo and thumbnail writes in flight at once per worker on S3 (local: one);
# a chunk claimed longer ago than IMPORT_CHUNK_TIMEOUT_MINUTES had its worker vanish and is handed out again.
IMPORT_PROCESSES = env_int("IMPORT_PROCESSES", os.cpu_count() or 1)
IMPORT_STORAGE_THREADS = env_int("IMPORT_STORAGE_THREADS", 8)
IMPORT_CHUNK_TIMEOUT_MINUTES = env_int("IMPORT_CHUNK_TIMEOUT_MINUTES", 10)

# Grading: how long `next` holds a patient's slot for a grader whose page stays unsaved
# (the open page renews it); other graders are offered other patients meanwhile.
GRADING_RESERVATION_MINUTES = env_int("GRADING_RESERVATION_MINUTES", 15)

# Background work (field-day imports). The embedded run processes at once (in IMPORT_PROCESSES
# processes); production sets TASKS_BACKEND=database and runs `manage.py run_workers`, which starts
# TASK_WORKERS `db_worker` processes (one per core by default; more machines may run their own).
TASKS_BACKEND = env("TASKS_BACKEND", "immediate")
TASK_WORKERS = env_int("TASK_WORKERS", os.cpu_count() or 1)
if TASKS_BACKEND == "database":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
elif TASKS_BACKEND == "immediate":
    TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
else:
    raise ImproperlyConfigured("TASKS_BACKEND must be 'immediate' or 'database'")

# Cache (login and password-reset throttling). Per process in the embedded run; production
# (settings.prod) shares it between app servers in the database unless CACHE_BACKEND says otherwise.
CACHES = cache_settings(env("CACHE_BACKEND", "local"))

# E-mail (password reset). Console by default; SMTP when EMAIL_HOST is set.
EMAIL_HOST = env("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "grading-center@localhost")

# The data team's API: knox tokens (only for the Data team), JSON, OpenAPI docs.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["knox.auth.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["exports.permissions.IsDataTeam"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"api_login": env("API_LOGIN_THROTTLE", "10/minute")},
    "NUM_PROXIES": NUM_PROXIES,
    # ?format= picks csv or json in the export views themselves.
    "URL_FORMAT_OVERRIDE": None,
}
API_TOKEN_TTL_HOURS = env_int("API_TOKEN_TTL_HOURS", 10)
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=API_TOKEN_TTL_HOURS),
    "TOKEN_PREFIX": env("API_TOKEN_PREFIX", "gc_"),
    "AUTO_REFRESH": False,
}
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 100)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 1000)
SPECTACULAR_SETTINGS = {
    "TITLE": "Grading Center API",
    "DESCRIPTION": "Studies, images and grades for the data team. Authenticate with a knox token: "
    "`Authorization: Token <token>` from POST /api/auth/login/ (HTTP Basic).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}

# Admin exports: exports.resources quotes cells a spreadsheet would run as formulas (=, +, -, @)
# itself; the library's own escaping only strips "=" and turns every XLSX cell into text.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False
IMPORT_EXPORT_USE_TRANSACTIONS = True
IMPORT_EXPORT_SKIP_ADMIN_CONFIRM = False

# Content-Security-Policy (django-csp): scripts only from our own static files (and the few
# inline scripts of Jazzmin's templates, allowed by hash); styles may be inline because Jazzmin,
# Bootstrap, Swagger UI and our progress bars use style attributes; photos may come from S3.
# tests/test_csp.py names the hash to add when a Jazzmin upgrade changes one of them.
CSP_JAZZMIN_SCRIPT_HASHES = [
    # admin/base.html and registration/base.html (Jazzmin 3.0.5): light / dark mode before first paint.
    "'sha256-nLEB6J7sxmSsTqwuB/NEyb2atpyjTdtHdfLxmsXvCP8='",
    # admin/change_list.html: the list filters' `filterInputLength` (no ModelAdmin sets one).
    "'sha256-F7GVayJMLy0KHikNUhjbBcBE0ax/V4knxuE9lJsuA6A='",
    # admin/auth/user/change_password.html and registration/password_change_form.html: "*" marks.
    "'sha256-OQlLsGYyiAVVwdHnkEraaS+8yfFm7rTeYMfelN7RwuE='",
    "'sha256-DT/ci/z/ofx36DBKYq8ZBDQ2sgAnvO+SmuKGfcZ95UU='",
]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", *CSP_JAZZMIN_SCRIPT_HASHES],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", *s3_image_sources(), *env_list("CSP_IMG_SRC")],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # Failed sign-ins and lockouts are warnings; axes' per-request chatter stays out of the log.
    "loggers": {"axes": {"level": "WARNING"}},
}

from .jazzmin import JAZZMIN_SETTINGS, JAZZMIN_UI_TWEAKS  # noqa: E402,F401
