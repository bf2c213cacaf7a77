#!/usr/bin/env bash
# Build the phe-fl node image from this checkout, on the base deploy/build-base.sh made:
#
#   deploy/build-image.sh                         # -> localhost/phe-fl-node:<version>
#   BASE_IMAGE=localhost/phe-fl-base:bookworm-py3.10 deploy/build-image.sh localhost/phe-fl-node:py310
#
# The build context is a scratch folder holding only what the image needs (pyproject.toml,
# README.md, phe_fl/, deploy/Containerfile, deploy/healthcheck.py), not the working tree's
# .venv, state or certificates.
#
# Environment:
#   RUNTIME     podman (default) or docker
#   BASE_IMAGE  default: localhost/phe-fl-base:trixie-py3.12
#   PHE_FL_REF  build phe-fl from this git commit (e.g. HEAD) instead of the working tree
#               (the Containerfile and healthcheck.py still come from the working tree)
#   PHE_FL_EXTRAS  phe-fl extras to install, comma-separated (e.g. torch: FedAvg apps)
#   PIP_CERT    a CA bundle pip must trust (a TLS-intercepting proxy), passed to the builder
#               stage as the build secret pip_cert; default: $PIP_CERT if it is set
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/deploy"
RUNTIME="${RUNTIME:-podman}"
BASE_IMAGE="${BASE_IMAGE:-localhost/phe-fl-base:trixie-py3.12}"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
TAG="${1:-localhost/phe-fl-node:${VERSION:-latest}}"

# shellcheck source=deploy/podman-env.sh
source "$HERE/podman-env.sh"

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
if [[ -n "${PHE_FL_REF:-}" ]]; then
    # LICENSE only where that commit has one (pyproject's license-files may name it).
    mapfile -t files < <(git -C "$ROOT" ls-tree --name-only "$PHE_FL_REF" \
        pyproject.toml README.md LICENSE phe_fl)
    git -C "$ROOT" archive "$PHE_FL_REF" "${files[@]}" | tar -C "$CTX" -x
else
    cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$CTX/"
    if [[ -f "$ROOT/LICENSE" ]]; then cp "$ROOT/LICENSE" "$CTX/"; fi
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -c phe_fl | tar -C "$CTX" -x
fi
mkdir "$CTX/deploy"
cp "$HERE/Containerfile" "$HERE/healthcheck.py" "$CTX/deploy/"

args=(build -f "$CTX/deploy/Containerfile" -t "$TAG" --build-arg "BASE_IMAGE=$BASE_IMAGE"
    --build-arg "PHE_FL_EXTRAS=${PHE_FL_EXTRAS:-}")
if [[ -n "${PIP_CERT:-}" && -s "${PIP_CERT:-}" ]]; then
    args+=(--secret "id=pip_cert,src=$PIP_CERT")
fi
printf 'build-image: %s %s\n' "$RUNTIME" "${args[*]} $CTX" >&2
"$RUNTIME" "${args[@]}" "$CTX"
printf 'build-image: done: %s\n' "$TAG" >&2
