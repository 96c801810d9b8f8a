# syntax=docker/dockerfile:1
# One image for every component: `kynamo operator | router | storage-node | local`.
#   docker build -t kynamo:0.1.0 .
#   docker run --rm -p 8000:8000 kynamo:0.1.0            # `kynamo local` (CMD default)
#   docker run --rm kynamo:0.1.0 storage-node --help
#
# Base pinned by exact tag. Pin it by digest too (python:3.11.11-slim-bookworm@sha256:...) in
# your build pipeline: a digest could not be resolved where this file was written (no registry
# access), and an invented one would break the build.

# ---- builder: wheels for kynamo and every dependency, installed into a venv ----
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Every native dependency (rocksdict, crc32c, msgpack, uvloop) ships manylinux wheels for
# CPython 3.11 on amd64 and arm64, so no compiler is needed. If one ever does, install
# build-essential here, in the builder only.
COPY pyproject.toml README.md ./
COPY kynamo ./kynamo
COPY operator ./operator
COPY router ./router
COPY storage-node ./storage-node
RUN python -m venv /opt/kynamo \
 && /opt/kynamo/bin/pip wheel --wheel-dir /wheels . \
 && /opt/kynamo/bin/pip install --no-index --find-links=/wheels kynamo \
 && /opt/kynamo/bin/kynamo --version

# ---- runtime: the venv only; no pip cache, no sources, no build tools ----
FROM python:3.11.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kynamo" \
      org.opencontainers.image.description="DynamoDB-compatible database for Kubernetes: operator, router and storage node in one image" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"

ENV PATH=/opt/kynamo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KYNAMO_HOST=0.0.0.0 \
    KYNAMO_DATA_DIR=/data

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 kynamo \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin kynamo \
 && mkdir /data \
 && chown 10001:10001 /data

COPY --from=builder /opt/kynamo /opt/kynamo

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 8000: DynamoDB API (router, local); 7100: storage-node HTTP (client, admin, /metrics); 7101: peer frames.
EXPOSE 8000 7100 7101
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz.
ENTRYPOINT ["kynamo"]
CMD ["local"]
