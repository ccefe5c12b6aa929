# syntax=docker/dockerfile:1
# Junction's image: the dependencies from requirements.lock (exact versions, hashes checked) in a
# layer of their own, built before the source is copied so a code change reuses it; a slim
# runtime that runs as an unprivileged numeric user and writes nothing outside /tmp.
# Build: docker build -t junction .   Run: see docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Only the lock: this layer changes when a dependency does, not when the code does.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
# The project itself, without dependencies (they are all in the lock): the `junction` command.
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    ENVIRONMENT=production
# A fixed numeric id, so Kubernetes' runAsNonRoot can check it without a name lookup.
RUN groupadd --system --gid 10001 junction \
    && useradd --system --uid 10001 --gid junction --home-dir /app --no-create-home junction
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# The source tree next to alembic/ is what runs (PYTHONPATH), so `junction migrate` finds the chain.
COPY alembic.ini LICENSE ./
COPY alembic ./alembic
COPY app ./app
# var/ holds the SQLite file of a development run only; production uses PostgreSQL.
RUN mkdir -p /app/var && chown junction:junction /app/var
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status == 200 else 1)"]
CMD ["junction", "serve", "--host", "0.0.0.0", "--port", "8000"]
