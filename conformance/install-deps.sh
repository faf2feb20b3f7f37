#!/usr/bin/env bash
# Installs what the live suites (conformance/: clients, s3, replicas, auth, mirror, and the
# harness they share, conformance/harness/) need:
#   - Debian packages: real registry clients, CNCF Distribution, and tools
#   - a Python venv at <repo>/.venv with pytest, oras, requests, moto, boto3,
#     matplotlib (for the benchmark chart, conformance/bench/chart.py), bcrypt and
#     cryptography (htpasswd entries and token signing in the auth tests), and pyjwt (the
#     OIDC provider, conformance/harness/oidc_provider.py), pyyaml (deploy/'s manifests, in
#     test_deploy.py), opentelemetry-proto (the OTLP trace exports the test collector
#     decodes, conformance/harness/otlp_receiver.py)
#   - Garage, an S3-compatible store, with cargo (conformance/harness/services.py runs it)
# Idempotent and quick when everything is already present.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
VENV="${REPO_ROOT}/.venv"

# prometheus: its promtool checks the PromQL of deploy/ (no Prometheus server is started).
APT_PACKAGES=(skopeo podman runc umoci buildah docker-registry docker.io redis-server wrk hey
              prometheus python3 python3-venv)
PIP_PACKAGES=(pytest oras requests "moto[server]" boto3 matplotlib bcrypt cryptography pyjwt pyyaml
              opentelemetry-proto)
# Module names used to check whether the pip packages are already installed.
PIP_MODULES=(pytest oras requests moto boto3 flask matplotlib bcrypt cryptography jwt yaml
             opentelemetry.proto.collector.trace.v1.trace_service_pb2)

log() { echo "install-deps: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# --- Debian packages -------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # docker-registry's package may start a system service; the suite runs its
    # own instances on free ports, so a running system one is harmless.
else
    log "apt packages already installed"
fi

# --- Python venv -----------------------------------------------------------
PYTHON="/usr/bin/python3"
if [ ! -x "$PYTHON" ]; then
    PYTHON="$(command -v python3)"
fi
if [ ! -x "${VENV}/bin/python" ] || ! "${VENV}/bin/python" -c 'import sys' 2>/dev/null; then
    log "creating venv at ${VENV}"
    rm -rf "${VENV}"
    "$PYTHON" -m venv "${VENV}"
fi

imports="$(printf 'import %s;' "${PIP_MODULES[@]}")"
if "${VENV}/bin/python" -c "${imports}" 2>/dev/null; then
    log "python packages already installed"
else
    log "pip installing: ${PIP_PACKAGES[*]}"
    "${VENV}/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi
# --- Garage (the second S3 server of the tests) ------------------------------
# Not packaged by Debian: built once with cargo (which also checks the crates' checksums
# against the lock file with --locked) and reused from then on.
GARAGE_VERSION="2.5.0"
if command -v garage >/dev/null 2>&1 || [ -x "${HOME}/.cargo/bin/garage" ]; then
    log "garage already installed"
else
    log "cargo installing garage ${GARAGE_VERSION} (takes a while, once)"
    cargo install garage --version "${GARAGE_VERSION}" --locked --quiet
fi
log "done"
