#!/usr/bin/env bash
# Build the base image phe-fl's node image starts from, locally, with no image registry:
# a minimal Debian made by debootstrap, plus a CPython that OpenFHE's wheels import on.
#
#   sudo deploy/build-base.sh                       # -> localhost/phe-fl-base:trixie-py3.12
#   sudo SUITE=bookworm PYTHON_PREFIX=~/.pyenv/versions/3.10.13 \
#        IMAGE=localhost/phe-fl-base:bookworm-py3.10 deploy/build-base.sh
#
# Why a CPython is copied in: OpenFHE's PyPI wheels import only on CPython 3.10
# (openfhe==1.6.1.0.22.4, an Ubuntu 22.04 build) and on CPython 3.12 with libstdc++ >=
# GLIBCXX_3.4.32 (openfhe==1.6.1.0.24.4, an Ubuntu 24.04 build). Debian ships neither
# interpreter (bookworm has 3.11, trixie 3.13). Trixie's libstdc++ (GCC 14, GLIBCXX_3.4.33)
# satisfies the 24.04 wheel, so the default is trixie + CPython 3.12. The interpreter is a
# CPython built with --enable-shared on this Debian release or an older one (pyenv's builds
# are: `pyenv install 3.12`), copied from PYTHON_PREFIX to /opt/python in the image. Checked
# on this project's machine (Debian 12 host, pyenv 3.12.1 built there): in the trixie image
# the stdlib's C modules import and `openfhe==1.6.1.0.24.4` installs and imports.
#
# Environment:
#   SUITE          Debian release to bootstrap (default: trixie)
#   MIRROR         Debian mirror (default: http://deb.debian.org/debian)
#   PYTHON_PREFIX  installed CPython to copy in (default: pyenv's newest 3.12, for bookworm 3.10)
#   IMAGE          image name to create (default: localhost/phe-fl-base:<suite>-py<X.Y>)
#   RUNTIME        podman (default) or docker: whichever imports the root filesystem
#   WORKDIR        scratch folder (default: a fresh mktemp -d, removed at the end)
# Needs root (debootstrap), debootstrap, and podman or docker.
set -euo pipefail

SUITE="${SUITE:-trixie}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
RUNTIME="${RUNTIME:-podman}"

die() { printf 'build-base: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-base: %s\n' "$*" >&2; }

[[ "$(id -u)" == 0 ]] || die "debootstrap needs root: run as root (sudo $0)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
command -v "$RUNTIME" >/dev/null || die "$RUNTIME is missing: apt-get install $RUNTIME"

if [[ -z "${PYTHON_PREFIX:-}" ]]; then
    want=3.12
    [[ "$SUITE" == bookworm ]] && want=3.10  # bookworm's libstdc++ is too old for the 3.12 wheel
    PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
    PYTHON_PREFIX="$(ls -d "$PYENV_ROOT/versions/$want".* 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$PYTHON_PREFIX" ]] ||
        die "no CPython $want found under $PYENV_ROOT/versions: set PYTHON_PREFIX to an installed" \
            "CPython $want built with --enable-shared (e.g. \`pyenv install $want\`)"
fi
PYBIN="$(ls "$PYTHON_PREFIX"/bin/python3.1[0-9] 2>/dev/null | head -n 1 || true)"
[[ -x "$PYBIN" ]] || die "$PYTHON_PREFIX/bin has no python3.X"
PYVER="$("$PYBIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$SUITE:$PYVER" in
    *:3.10 | trixie:3.12 | forky:3.12 | sid:3.12) ;;
    *) die "CPython $PYVER on Debian $SUITE: OpenFHE's wheels import on 3.10, or on 3.12 with" \
        "GLIBCXX_3.4.32 (trixie or newer)" ;;
esac
IMAGE="${IMAGE:-localhost/phe-fl-base:$SUITE-py$PYVER}"

# Shared libraries the copied CPython's C modules link against (ssl, ctypes, sqlite3, lzma,
# bz2, readline, curses, uuid), libgomp for OpenFHE's OpenMP, and the CA certificates pip
# needs in the builder stage. Trixie renamed some for the 64-bit time_t transition.
if [[ "$SUITE" == bookworm ]]; then
    LIBS=libssl3,libreadline8
else
    LIBS=libssl3t64,libreadline8t64
fi
LIBS="ca-certificates,$LIBS,libffi8,libsqlite3-0,zlib1g,libbz2-1.0,liblzma5,libncursesw6,libuuid1,libgomp1,libstdc++6"

WORK="${WORKDIR:-$(mktemp -d)}"
ROOTFS="$WORK/rootfs"
cleanup() { [[ -n "${WORKDIR:-}" ]] || rm -rf "$WORK"; }
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE into $ROOTFS (about a minute)"
debootstrap --variant=minbase --include="$LIBS" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap failed; last lines of $WORK/debootstrap.log: $(tail -n 5 "$WORK/debootstrap.log")"

log "copying CPython $PYVER from $PYTHON_PREFIX to /opt/python"
mkdir -p "$ROOTFS/opt/python"
cp -a "$PYTHON_PREFIX/." "$ROOTFS/opt/python/"
# Leave out what a node never needs (tests, IDLE, tkinter, static libraries, caches).
rm -rf "$ROOTFS/opt/python/lib/python$PYVER/test" "$ROOTFS/opt/python/lib/python$PYVER/idlelib" \
    "$ROOTFS/opt/python/lib/python$PYVER/tkinter" "$ROOTFS/opt/python/lib/python$PYVER/config-"*/*.a
find "$ROOTFS/opt/python" -name __pycache__ -type d -prune -exec rm -rf {} +
# The interpreter's RUNPATH still names its old prefix: let the dynamic loader find libpython.
echo /opt/python/lib >"$ROOTFS/etc/ld.so.conf.d/phe-fl-python.conf"
chroot "$ROOTFS" /sbin/ldconfig
# No symlink into /usr/local/bin: CPython finds its standard library from the path it was
# started by, so venvs must be made with /opt/python/bin/python3 (first on PATH below).
chroot "$ROOTFS" /opt/python/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv' ||
    die "the copied CPython does not run in the $SUITE root filesystem (missing libraries?)"

# Slim down: apt lists and caches, documentation, locales.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/log/*

log "importing into $RUNTIME as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | "$RUNTIME" import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$IMAGE" >/dev/null
log "done: $IMAGE (Debian $(cat "$ROOTFS/etc/debian_version"), CPython $PYVER)"
echo "$IMAGE"
