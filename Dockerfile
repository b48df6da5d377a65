# syntax=docker/dockerfile:1
# The dirsync image: the code location (served with `dagster api grpc`), and the same Dagster versions for
# the webserver, the daemon and every run (Compose: deploy/docker-compose.yaml; Kubernetes: the Helm chart's
# user deployment, daemon, webserver and run Jobs, deploy/helm/values.yaml). docs/deploy.md says how to
# build and start it.
#
# Nothing secret is in the image: the Postgres password, the Google keys and the connections registry
# come at run time from env files / Kubernetes secrets and the warehouse volume. .dockerignore keeps
# secrets/, data/ and local Dagster homes out of the build context.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# EXTRAS: k8s (dagster-postgres + dagster-k8s, for the Helm chart's K8sRunLauncher; also fine for Compose)
# or docker (dagster-postgres + dagster-docker, for Compose with the DockerRunLauncher).
ARG EXTRAS=k8s

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DIRSYNC_CONFIG=/opt/dirsync/dirsync.yaml

WORKDIR /opt/dirsync/app

# Dependencies first (cached until pyproject.toml or the lock changes), then the package itself, both
# pinned by requirements.lock, the same pins CI tests.
COPY pyproject.toml requirements.lock README.md ./
COPY dirsync_pipeline ./dirsync_pipeline
RUN pip install -c requirements.lock ".[${EXTRAS}]" \
    && useradd --system --uid 10001 --home-dir /opt/dirsync --shell /usr/sbin/nologin dirsync \
    && mkdir -p /opt/dirsync/warehouse "${DAGSTER_HOME}/storage" /run/secrets/dirsync \
    && chown -R dirsync:dirsync /opt/dirsync/warehouse "${DAGSTER_HOME}"

# The instance (Postgres, run queue, limits; its settings come from DAGSTER_POSTGRES_* at run time), the
# Compose workspace, and the deployment's dirsync config: the warehouse folder, no connection (each
# organisation is added at run time with `dirsync connections add`). Kubernetes mounts the chart's own
# dagster.yaml and workspace over these.
COPY deploy/dagster.yaml deploy/workspace.yaml ${DAGSTER_HOME}/
COPY deploy/dirsync.yaml /opt/dirsync/dirsync.yaml

USER dirsync
WORKDIR /opt/dirsync
EXPOSE 3000 4000

# The code location: a gRPC server the webserver and the daemon load definitions from, and the process
# the default run launcher starts each run in. Compose and the Helm chart name their own command for the
# webserver and the daemon.
CMD ["dagster", "api", "grpc", "--module-name", "dirsync_pipeline.definitions", "--host", "0.0.0.0", "--port", "4000"]
