# syntax=docker/dockerfile:1
# One image for every stage: the command picks the service (`fiscalflow service run <stage>`).
# Build: docker build -t fiscalflow:local .

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: compilers and pip live here only ---------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Some pinned packages may build from source on a platform without a wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first (pinned by the lock), so a code change does not reinstall them.
COPY constraints.txt pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# The product only: the tooling (local stack and its servers, demo issuers, bench) is a separate
# distribution (tooling/) that never enters the image; compose and the chart provide real servers.
RUN pip install -c constraints.txt .

# pyproject declares no package data, so the wheel carries .py files only: put the other
# files of the packages (SQL migrations, ...) beside them.
RUN site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && find shared services -type f ! -name '*.py' ! -name '*.pyc' ! -path '*/__pycache__/*' \
         -exec cp --parents {} "$site"/ \;

# Creates every topic with its partition count (the chart's hook Job and compose run it).
COPY deploy/create_topics.py /opt/venv/share/fiscalflow/create_topics.py
RUN python -m compileall -q /opt/venv/lib /opt/venv/share/fiscalflow

# --- runtime: the venv and nothing else -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="fiscalflow" \
      org.opencontainers.image.description="SAT CFDI 4.0 invoice pipeline: one image, the stage chosen by command" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without a name lookup.
RUN groupadd --system --gid 10001 fiscalflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp/fiscalflow --no-create-home \
         --shell /usr/sbin/nologin fiscalflow

COPY --from=builder /opt/venv /opt/venv

# Read-only root filesystem: the only writable place is /tmp (an emptyDir in Kubernetes).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FISCALFLOW_LOCAL_DIR=/tmp/fiscalflow \
    FISCALFLOW_HTTP_HOST=0.0.0.0 \
    FISCALFLOW_METRICS_PORT=9100 \
    FISCALFLOW_INGEST_PORT=8080 \
    FISCALFLOW_REPORT_PORT=8081 \
    HOME=/tmp/fiscalflow

WORKDIR /tmp
USER 10001:10001

EXPOSE 9100 8080 8081

# No HEALTHCHECK: probes come from the orchestrator (compose healthcheck, Kubernetes probes).
CMD ["fiscalflow", "--help"]
