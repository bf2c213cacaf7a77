# Sourced (not run) by deploy/build-image.sh and deploy/smoke.sh; source it before
# podman-compose on such a host: `source deploy/podman-env.sh`.
#
# Rootful podman 4.3 (Debian 12) fails on some hosts before any container starts:
#   - cgroups in "hybrid" mode (cgroup v1 controllers plus an empty cgroup2 at
#     /sys/fs/cgroup/unified), where crun refuses with
#       "crun: cgroups in hybrid mode not supported, drop all controllers from cgroupv2";
#     runc runs there;
#   - no CAP_SYS_RESOURCE and a hard open-files limit below podman's default (1048576):
#       "crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI permission denied"
#     (then RLIMIT_NPROC), so containers get limits the host can grant.
# Both were seen on this project's machines (Firecracker VM, Debian 12). On such a host this
# writes a containers.conf with those two settings and exports CONTAINERS_CONF (unless it is
# already set), which podman, podman build and podman-compose all read. Elsewhere it does
# nothing.

phe_fl_podman_env() {
    [[ "${RUNTIME:-podman}" == podman ]] || return 0
    [[ -z "${CONTAINERS_CONF:-}" ]] || return 0
    local runtime="" ulimits=""
    if [[ -f /sys/fs/cgroup/unified/cgroup.controllers && -d /sys/fs/cgroup/memory ]] &&
        command -v runc >/dev/null 2>&1; then
        runtime=runc
    fi
    local capeff
    capeff="$(awk '/^CapEff:/ {print $2}' /proc/self/status 2>/dev/null || echo)"
    if [[ -n "$capeff" ]] && (((0x$capeff >> 24 & 1) == 0)); then  # no CAP_SYS_RESOURCE
        local n u
        n="$(ulimit -Hn)"
        u="$(ulimit -Hu)"
        [[ "$n" == unlimited || "$n" -gt 16384 ]] && n=16384
        [[ "$u" == unlimited || "$u" -gt 16384 ]] && u=16384
        ulimits="\"nofile=$n:$n\", \"nproc=$u:$u\""
    fi
    [[ -n "$runtime$ulimits" ]] || return 0
    local conf="${TMPDIR:-/tmp}/phe-fl-containers.conf"
    {
        echo "# written by deploy/podman-env.sh"
        echo "[containers]"
        [[ -n "$ulimits" ]] && echo "default_ulimits = [$ulimits]"
        echo "[engine]"
        [[ -n "$runtime" ]] && echo "runtime = \"$runtime\""
    } >"$conf"
    export CONTAINERS_CONF="$conf"
    printf 'podman-env: this host needs %s; using %s\n' \
        "${runtime:+runtime $runtime }${ulimits:+ulimits $ulimits}" "$conf" >&2
}
phe_fl_podman_env
