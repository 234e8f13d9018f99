# The Grading Center behind gunicorn. Configure with environment variables (see README).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=settings.prod \
    PORT=8000

RUN useradd --create-home --uid 10001 grading
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown=grading:grading . .
RUN DJANGO_SECRET_KEY=collectstatic-only-not-used-at-run-time-0123456789abcdef \
    DJANGO_ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput \
 && chown -R grading:grading /app/staticfiles

USER grading
EXPOSE 8000

# /healthz/ answers 503 (urlopen raises, the check fails) when the database or the storage is down;
# /livez/ answers for the process alone, for an orchestrator's liveness probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; host = os.environ['DJANGO_ALLOWED_HOSTS'].split(',')[0].strip(); \
req = urllib.request.Request('http://127.0.0.1:%s/healthz/' % os.environ.get('PORT', '8000'), headers={'Host': host}); \
urllib.request.urlopen(req, timeout=4)"

# Migrations run once per release (e.g. `docker run IMAGE python manage.py migrate`), not on every start.
# Imports: `docker run IMAGE python manage.py run_workers` starts TASK_WORKERS db_worker processes
# (one per core by default); run it in as many containers, on as many machines, as the load needs.
CMD ["sh", "-c", "exec gunicorn wsgi:application --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-3} --timeout 30 --access-logfile -"]
