# syntax=docker/dockerfile:1
# One image for the services: `baycast <service>` (ingest, mixer, graphics, distribution,
# monitoring, control). Build from the repository root:
# docker build -t ghcr.io/baycast/baycast:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- web: the control room's front-end library (ES modules, no build step) from the npm
# registry, the versions `make setup` installs (the Makefile's WEB_PACKAGES; a unit test compares)
FROM ${NODE_IMAGE} AS web
RUN npm install --no-audit --no-fund --save-exact --prefix /web preact@11.2.0 htm@3.1.1

# --- build: generate the proto code and install the project into a self-contained venv -------
FROM ${PYTHON_IMAGE} AS build
# pip compiles the installed modules: the runtime image has a read-only root and writes no .pyc.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# grpcio-tools lives in its own venv so that it never reaches the runtime image.
RUN python -m venv /opt/protoc \
    && /opt/protoc/bin/pip install grpcio-tools==1.85.1 \
    && python -m venv /opt/baycast

COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY services/ services/

# The same generation as `make proto` (without the mypy stubs): protoc writes imports rooted at
# the proto path; the sed makes them package-absolute.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN rm -rf services/common/gen \
    && mkdir -p services/common/gen \
    && /opt/protoc/bin/python -m grpc_tools.protoc -Iproto \
         --python_out=services/common/gen --grpc_python_out=services/common/gen \
         proto/baycast/v1/*.proto \
    && find services/common/gen -name '*.py' -exec sed -i -E \
         's/^from baycast\.v1 import/from services.common.gen.baycast.v1 import/; s/^import baycast\.v1\./import services.common.gen.baycast.v1./' {} + \
    && touch services/common/gen/__init__.py services/common/gen/baycast/__init__.py \
         services/common/gen/baycast/v1/__init__.py \
    && /opt/baycast/bin/pip install . \
    && /opt/baycast/bin/baycast --help >/dev/null

# --- runtime: the venv, Debian's ffmpeg (SRT) and a CJK font; no compiler, no pip cache --------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="baycast" \
      org.opencontainers.image.description="Live multi-station co-production services" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/baycast/baycast"

# ffmpeg: SRT and RTMP pushes (PyAV's bundled FFmpeg has no SRT); libsrt1.5-gnutls (ffmpeg's
# SRT library): ingest's SRT listeners load it directly; fonts-wqy-microhei: Chinese glyphs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.* libsrt1.5-gnutls=1.5.1-* \
         fonts-wqy-microhei=0.2.0-beta-* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 baycast \
    && useradd --system --uid 10001 --gid baycast --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin baycast \
    && install -d -o baycast -g baycast /var/lib/baycast /var/lib/baycast/data

COPY --from=build /opt/baycast /opt/baycast
COPY --from=web /web/node_modules /opt/baycast/web/node_modules

# GLIBC_TUNABLES: at most two malloc arenas a process (ADR 0028; the local launcher sets the same).
ENV PATH=/opt/baycast/bin:$PATH \
    GLIBC_TUNABLES=glibc.malloc.arena_max=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    BAYCAST_LOG_FORMAT=json \
    BAYCAST_DISTRIBUTION_DATA_DIR=/var/lib/baycast/data \
    BAYCAST_CONTROL_WEB_MODULES=/opt/baycast/web/node_modules
# The root filesystem is read-only in Kubernetes: /tmp (also HOME, for any library cache) and the
# distribution data directory are volumes; the process writes nowhere else.
WORKDIR /var/lib/baycast
USER 10001:10001
EXPOSE 8101-8106 9101-9106 1935 9000/udp
ENTRYPOINT ["baycast"]
CMD ["--help"]
