# syntax=docker/dockerfile:1
# Multi-stage: build a virtual environment with the dependencies, then copy it into a slim
# runtime image that runs as an unprivileged user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --upgrade pip && pip install .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    ENVIRONMENT=production
RUN groupadd --system junction && useradd --system --gid junction --home /app junction
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# The source tree next to alembic/ is what runs (PYTHONPATH), so `junction migrate` finds the chain.
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
RUN mkdir -p /app/var && chown -R junction:junction /app/var
USER junction
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status == 200 else 1)"
CMD ["junction", "serve", "--host", "0.0.0.0", "--port", "8000"]
