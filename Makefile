# baycast — one gate for humans and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
# Debian packages the tests and the demo use: an RTMP receiver, ffmpeg with SRT, a CJK font,
# a browser for WebRTC tests, promtool for the alert rules, and GStreamer's webrtcbin with VP8,
# H.264 and Opus encoders plus the system Python's GObject bindings (a WHIP publisher in tests).
# libsrt1.5-gnutls (ffmpeg's own SRT library) is named too: ingest loads it itself (libsrt.py).
APT_PACKAGES := nginx libnginx-mod-rtmp ffmpeg libsrt1.5-gnutls fonts-wqy-microhei chromium \
	prometheus iproute2 \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-nice python3-gi gir1.2-gst-plugins-base-1.0 \
	gir1.2-gst-plugins-bad-1.0
# OBS Studio's WebRTC stack, libdatachannel, as a WHIP publisher in tests: its Python binding
# needs Python >= 3.12, so it gets a venv of its own: on pyenv's newest 3.12+ if there is one,
# else on the system's.
PYENV_ROOT ?= $(HOME)/.pyenv
OBS_PYTHON ?= $(lastword $(wildcard /usr/bin/python3.1[2-9] $(PYENV_ROOT)/versions/3.1[2-9]*/bin/python3))
OBS_VENV := build/obs-venv
OBS_STAMP := $(OBS_VENV)/.installed
OBS_PACKAGES := libdatachannel-py==2026.1.0 av==18.1.0 numpy==2.4.6
# checkov, the generic Kubernetes pod rules of `make k8s-check` (deploy/k8s/check.py): it pins
# packaging<24, which pytest 9 refuses, so it gets a venv of its own.
CHECKOV_VENV := build/checkov-venv
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_PACKAGES := checkov==3.3.30
PROTOS := $(wildcard proto/baycast/v1/*.proto)
GEN_DIR := services/common/gen
GEN_STAMP := $(GEN_DIR)/.stamp

.PHONY: help setup apt run test lint fmt types unit-test bench soak proto k8s-check clean cluster test-cluster

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# Browser modules from the npm registry, exact versions: hls.js for the show page; Preact and htm
# for the control room's pages (ES modules the control service serves as they are, no build step).
# The Dockerfile installs the control room's two with the same versions (a unit test compares).
WEB_PACKAGES := hls.js@1.7.4 preact@11.2.0 htm@3.1.1
WEB_STAMP := build/web/.installed

# What the demo needs; the tests need the OBS-style publisher's venv as well.
RUN_DEPS := apt $(PY_STAMP) $(GEN_STAMP) $(WEB_STAMP)

setup: $(RUN_DEPS) $(OBS_STAMP) $(CHECKOV_STAMP) ## install everything (idempotent): Debian packages, .venv, generated code, browser modules, the OBS-style publisher's and checkov's venvs

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(WEB_STAMP): Makefile
	mkdir -p build/web
	npm install --silent --no-audit --no-fund --save-exact --prefix build/web $(WEB_PACKAGES)
	touch $@

$(OBS_STAMP): Makefile
	@test -n "$(OBS_PYTHON)" || { echo "no Python >= 3.12 found for $(OBS_VENV) (set OBS_PYTHON=...)"; exit 1; }
	$(OBS_PYTHON) -m venv --clear $(OBS_VENV)
	$(OBS_VENV)/bin/python -m pip install -q $(OBS_PACKAGES)
	touch $@

$(CHECKOV_STAMP): Makefile
	$(PYTHON) -m venv --clear $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q $(CHECKOV_PACKAGES)
	touch $@

$(PY_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

proto: $(PY_STAMP) ## regenerate Python code from proto/ (never committed)
	@tmp=$$(mktemp -d) && \
	PATH=$(abspath $(BIN)):$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp \
	  --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) && \
	find $$tmp -name '*.py*' -exec sed -i -E 's/^from baycast\.v1 import/from services.common.gen.baycast.v1 import/; s/^import baycast\.v1\./import services.common.gen.baycast.v1./' {} + && \
	touch $$tmp/__init__.py $$tmp/baycast/__init__.py $$tmp/baycast/v1/__init__.py $$tmp/.stamp && \
	rm -rf $(GEN_DIR) && mv $$tmp $(GEN_DIR) && chmod 755 $(GEN_DIR) && echo "generated $(GEN_DIR)"
	@# protoc writes imports rooted at the proto path; the sed above makes them package-absolute.

$(GEN_STAMP): $(PROTOS) $(PY_STAMP)
	$(MAKE) --no-print-directory proto

run: $(RUN_DEPS) ## run the demo show 启航·大湾区 on this machine (Ctrl-C stops it)
	$(BIN)/baycast up

lint: setup ## format check and lint
	$(BIN)/ruff format --check services tests bench
	$(BIN)/ruff check services tests bench

fmt: setup ## format the code
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

types: setup ## static types
	$(BIN)/mypy

test: setup lint types k8s-check ## lint, types, manifests and every test
	$(BIN)/pytest -q -rs -p no:cacheprovider --durations=20

cluster: setup ## a 3-server NATS cluster and two replicas of each service, each on a host of its own (network namespaces, root), until Ctrl-C
	$(PY) -m tests.cluster.harness

test-cluster: setup ## only the multi-host suite (make test runs it too)
	$(BIN)/pytest -q -rs -p no:cacheprovider -m cluster

bench: setup ## measure against the targets and rewrite BENCHMARKS.md
	$(PY) -m bench

soak: setup ## the seed's show for 50 minutes (BAYCAST_SOAK_S): skips, memory growth, freezes
	$(PY) -m bench soak

k8s-check: setup ## render and validate the Kubernetes manifests and the Helm chart
	@if [ -f deploy/k8s/check.py ]; then $(PY) deploy/k8s/check.py; else echo "no manifests yet"; fi

clean: ## remove generated code and caches (keeps .venv)
	rm -rf $(GEN_DIR) .mypy_cache .ruff_cache .pytest_cache
