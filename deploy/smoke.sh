#!/usr/bin/env bash
# Smoke test of the node image: build the base (if missing) and the node image, then run
# phe-fl in it. Needs root (debootstrap), podman (or RUNTIME=docker), debootstrap, and a
# CPython for the base (see build-base.sh). Takes a few minutes; not part of `./dev test`
# unless PHE_FL_CONTAINER_SMOKE=1 (tests/deploy/test_manifests.py::test_container_smoke).
#
#   deploy/smoke.sh                 # build everything needed, then check
#   SKIP_BUILD=1 deploy/smoke.sh    # check an image built before
#
# Checks: `phe-fl --version` and `phe-fl params` run; the process is user 10001, not root;
# openfhe imports; the image holds no compiler and no pip in the node's venv; the default
# command is `phe-fl node --config /kit/node.toml` (a missing kit is reported in words);
# the container runs with a read-only root filesystem and every capability dropped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUNTIME="${RUNTIME:-podman}"
BASE_IMAGE="${BASE_IMAGE:-localhost/phe-fl-base:trixie-py3.12}"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
IMAGE="${IMAGE:-localhost/phe-fl-node:${VERSION:-latest}}"
export RUNTIME BASE_IMAGE

# shellcheck source=deploy/podman-env.sh
source "$HERE/podman-env.sh"

say() { printf 'smoke: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
    if ! "$RUNTIME" image exists "$BASE_IMAGE" 2>/dev/null &&
        ! "$RUNTIME" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "building the base image $BASE_IMAGE"
        IMAGE="$BASE_IMAGE" "$HERE/build-base.sh" >/dev/null
    fi
    say "building $IMAGE"
    "$HERE/build-image.sh" "$IMAGE"
fi

run() { "$RUNTIME" run --rm --read-only --cap-drop ALL --security-opt no-new-privileges "$@"; }

out="$(run "$IMAGE" --version)" || fail "phe-fl --version"
say "phe-fl --version: $out"
out="$(run "$IMAGE" params)" || fail "phe-fl params"
grep -q "n15-depth11-128" <<<"$out" || fail "phe-fl params does not list n15-depth11-128: $out"
say "phe-fl params: $(wc -l <<<"$out") lines"

out="$(run --entrypoint /opt/phe-fl/bin/python "$IMAGE" -c '
import os, sys, openfhe, phe_fl.federation.node
print(os.getuid(), os.getgid(), sys.version.split()[0])')" || fail "python in the venv"
read -r uid gid pyver <<<"$out"
[[ "$uid" == 10001 && "$gid" == 10001 ]] || fail "runs as $uid:$gid, not 10001:10001"
say "runs as $uid:$gid, CPython $pyver, openfhe and the node import"

out="$(run --entrypoint /bin/sh "$IMAGE" -c \
    'for c in gcc cc g++ c++ clang make; do command -v $c; done; ls /opt/phe-fl/bin/pip* 2>/dev/null' ||
    true)"
[[ -z "$out" ]] || fail "the runtime image carries build tools or pip: $out"
say "no compiler, no pip in the node's venv"

out="$(run --entrypoint /bin/sh "$IMAGE" -c 'command -v phe-fl-health; phe-fl-health "" 127.0.0.1:9 2>&1; echo "exit $?"' || true)"
grep -q "^/opt/phe-fl/bin/phe-fl-health" <<<"$out" || fail "phe-fl-health is not on PATH: $out"
grep -q "UNAVAILABLE" <<<"$out" && grep -q "^exit 1" <<<"$out" ||
    fail "phe-fl-health against a closed port: $out"
say "phe-fl-health on PATH (a closed port: UNAVAILABLE, exit 1)"

out="$(run "$IMAGE" 2>&1)" && fail "the node started without a kit: $out"
grep -q "/kit/node.toml" <<<"$out" || fail "no kit: unexpected output: $out"
say "without a kit the node says: $(tail -n 1 <<<"$out")"

out="$(run --entrypoint /bin/sh "$IMAGE" -c 'touch /opt/x 2>&1; touch /state/x && echo state-writable' 2>&1 || true)"
grep -q "Read-only file system" <<<"$out" || fail "root filesystem is writable: $out"
say "read-only root filesystem; /state volume: ${out##*$'\n'}"

say "PASS ($IMAGE)"
