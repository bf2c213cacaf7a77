"""deploy/: the Kubernetes overlays render and validate, the compose file and the image
follow the rules the deployment depends on.

- Every overlay under deploy/k8s/overlays is rendered with ``kubectl kustomize`` and each
  object is validated against the Kubernetes JSON schemas (``kubernetes-validate``, strict:
  unknown fields are errors), then checked against our own rules: one replica, probes on
  the node's health port (liveness on "", readiness on "phe_fl.v2.Ready"), the metrics port
  and the Prometheus annotations that point a scraper at it, JSON logs, the state
  directory on a PersistentVolumeClaim, the kit from a Secret mounted read-only, non-root,
  read-only root filesystem, no privilege escalation, every capability dropped, memory
  requests from the benchmarks' figures; a root overlay has a Service for the tree port only;
  every site of deploy/federation.toml has its overlay.
- deploy/compose.yaml: every service mounts its kit read-only, nodes keep state on a volume,
  log JSON and expose their metrics port, the querier depends on the root, and it all agrees
  with deploy/federation.toml, which `phe-fl provision` turns into kits whose node.toml the
  containers' ports and paths match.
- deploy/Containerfile: multi-stage, runtime as a non-root user, the node command, the ports.

kubectl and kubernetes-validate are skipped when missing on a developer's machine; under
CI (CI=true) a missing tool fails the test with what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

if os.environ.get("CI") == "true":
    import yaml  # under CI a missing PyYAML (kubernetes-validate's dependency) fails
else:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (dev extra)")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())

HEALTH_PORT = 9000  # [node] health in every kit (deploy/federation.toml)
METRICS_PORT = 9100  # [node] metrics in every kit: Prometheus, plaintext HTTP
METRICS_PATH = "/metrics"  # phe_fl/federation/observability.py serve_metrics
LOG_FORMAT = "json"  # PHE_FL_LOG_FORMAT of every node container
TREE_PORT = 50051  # [node] listen on the root
READY_SERVICE = "phe_fl.v2.Ready"  # phe_fl/federation/node.py READY_SERVICE
STATE_DIR = "/state"
KIT_DIR = "/kit"
# A node at n15-depth11-128 peaked at 3.3 GiB (leaf) and 4.4 GiB (root) training over the
# federation (benchmarks/README.md); requests below that would be evicted or OOM-killed.
MIN_MEMORY = {"leaf": 3.3 * 2**30, "root": 4.4 * 2**30}


def _missing(what: str, install: str) -> None:
    message = f"{what} is missing; install it with: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (under CI the deploy checks must run: see .ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        _missing("kubectl", "apt-get install kubectl (kustomize v4 or newer: kubectl >= 1.21)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate", "pip install kubernetes-validate (the dev extra)")
    return kubernetes_validate


def _render(kubectl: str, overlay: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"kubectl kustomize {overlay.relative_to(DEPLOY.parent)} failed "
        f"(kustomize v4 or newer is needed, kubectl >= 1.21):\n{proc.stderr}"
    )
    # Deprecation warnings would mean fields a future kustomize drops.
    assert "Warning" not in proc.stderr, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {overlay.name: _render(kubectl, overlay) for overlay in OVERLAYS}


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def _role(overlay: str) -> str:
    role = overlay.rsplit("-", 1)[-1]
    assert role in ("root", "leaf", "inner"), f"overlay {overlay}: name must end -root/-inner/-leaf"
    return role


def _quantity(text: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(text))
    assert match, f"not a quantity: {text!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_there_are_root_and_leaf_overlays() -> None:
    roles = {_role(p.name) for p in OVERLAYS}
    assert {"root", "leaf"} <= roles, [p.name for p in OVERLAYS]


def _versions(kubernetes_validate: Any) -> list[str]:
    """The oldest bundled schema with gRPC probes GA (1.27) and the newest."""
    from kubernetes_validate import utils

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    available = sorted(set(utils.all_versions()), key=key)
    oldest = next((v for v in available if key(v) >= (1, 27)), available[-1])
    return sorted({oldest, kubernetes_validate.latest_version()}, key=key)


def test_validator_rejects_a_bad_object(kubernetes_validate: Any) -> None:
    """The schema check is not vacuous: a misspelt probe field is an error."""
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {
            "containers": [{"name": "c", "image": "i", "livenessProbe": {"grpc": {"prot": 9000}}}]
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_overlay_validates_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], kubernetes_validate: Any, overlay: str
) -> None:
    objects = rendered[overlay]
    assert objects, f"{overlay} rendered nothing"
    for version in _versions(kubernetes_validate):
        for obj in objects:
            where = f"{overlay}: {obj['kind']} {obj['metadata']['name']} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_overlay_follows_node_rules(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    role = _role(overlay)
    deployment = _one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1, "one node process per site (one party, one state dir)"
    assert spec["strategy"]["type"] == "Recreate", "never two pods on one state volume"
    pod = spec["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "node"]
    assert container["args"] == ["node", "--config", f"{KIT_DIR}/node.toml"]

    # Probes: native gRPC probes on the health port.
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert ports.get("health") == HEALTH_PORT, ports
    for probe_name, grpc_service in (
        ("livenessProbe", ""),
        ("readinessProbe", READY_SERVICE),
        ("startupProbe", ""),
    ):
        probe = container.get(probe_name)
        assert probe is not None, f"{overlay}: no {probe_name}"
        grpc = probe.get("grpc")
        assert grpc is not None, f"{overlay}: {probe_name} must be a gRPC probe"
        assert grpc["port"] == HEALTH_PORT, f"{overlay}: {probe_name} on port {grpc['port']}"
        assert grpc.get("service", "") == grpc_service, f"{overlay}: {probe_name} service"

    # Metrics: the port, and the annotations Prometheus' pod discovery reads.
    assert ports.get("metrics") == METRICS_PORT, f"{overlay}: no metrics port: {ports}"
    annotations = spec["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true", f"{overlay}: {annotations}"
    assert annotations.get("prometheus.io/port") == str(METRICS_PORT), f"{overlay}: {annotations}"
    assert annotations.get("prometheus.io/path") == METRICS_PATH, f"{overlay}: {annotations}"
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("PHE_FL_LOG_FORMAT") == LOG_FORMAT, f"{overlay}: logs must be JSON: {env}"

    # Volumes: the state dir on a PVC rendered with it, the kit from a read-only Secret.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state = volumes[mounts[STATE_DIR]["name"]]
    claim = state.get("persistentVolumeClaim", {}).get("claimName")
    assert claim, f"{overlay}: {STATE_DIR} is not on a PersistentVolumeClaim"
    assert claim in {p["metadata"]["name"] for p in _kind(objects, "PersistentVolumeClaim")}
    assert not mounts[STATE_DIR].get("readOnly", False)
    kit = volumes[mounts[KIT_DIR]["name"]]
    assert "secret" in kit, f"{overlay}: {KIT_DIR} must come from a Secret"
    assert mounts[KIT_DIR].get("readOnly") is True, f"{overlay}: {KIT_DIR} must be read-only"
    for mount in container["volumeMounts"]:
        if "secret" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True, f"{overlay}: secret {mount['name']} writable"
    assert kit["secret"]["secretName"].startswith(overlay.rsplit("-", 1)[0]), (
        f"{overlay}: the kit Secret should be this site's"
    )

    # Security: non-root, read-only root filesystem, no escalation, no capabilities.
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True
    assert sc.get("runAsUser", pod_sc.get("runAsUser")) not in (None, 0)
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("privileged", False) is False
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert not sc.get("capabilities", {}).get("add")
    assert pod.get("automountServiceAccountToken") is False

    # Memory from the benchmarks.
    resources = container["resources"]
    request = _quantity(resources["requests"]["memory"])
    assert request >= MIN_MEMORY["root" if role == "root" else "leaf"], (
        f"{overlay}: memory request {resources['requests']['memory']} is below the node's "
        "measured peak (benchmarks/README.md)"
    )
    assert _quantity(resources["limits"]["memory"]) >= request

    # The tree port and its Service: on the root (and inner nodes), never on a leaf.
    services = _kind(objects, "Service")
    if role == "leaf":
        assert "tree" not in ports, f"{overlay}: a leaf opens no tree port"
        assert not services, f"{overlay}: a leaf needs no Service"
    else:
        assert ports.get("tree") == TREE_PORT, ports
        service = _one(objects, "Service")
        # Only the tree port: health and metrics are plaintext, never on the Service that
        # other institutions may reach.
        (port,) = service["spec"]["ports"]
        assert port["port"] == TREE_PORT and port["targetPort"] in ("tree", TREE_PORT)
        # Ready needs the children connected, which needs the Service: publish regardless.
        assert service["spec"].get("publishNotReadyAddresses") is True
        labels = spec["template"]["metadata"]["labels"]
        selector = service["spec"]["selector"]
        assert selector and all(labels.get(k) == v for k, v in selector.items()), (
            f"{overlay}: the Service selects {selector}, the pod has {labels}"
        )
    pod_labels = spec["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())


# -- compose, federation example, image --------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return compose


@pytest.fixture(scope="module")
def federation() -> dict[str, Any]:
    return tomllib.loads((DEPLOY / "federation.toml").read_text())


def _volumes(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) from the short volume syntax."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def test_every_site_of_the_example_has_an_overlay(federation: dict[str, Any]) -> None:
    names = {p.name for p in OVERLAYS}
    tree = federation["tree"]
    for site in federation["site"]:
        sid = site["id"]
        role = "root" if sid not in tree else ("inner" if sid in tree.values() else "leaf")
        assert f"{sid}-{role}" in names, f"no overlay {sid}-{role} in {sorted(names)}"


def test_compose_services_mount_their_kits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"site-a", "site-b", "site-c", "querier"} <= set(services)
    for name, service in services.items():
        volumes = _volumes(service)
        assert KIT_DIR in volumes, f"{name} mounts no kit at {KIT_DIR}"
        source, mode = volumes[KIT_DIR]
        assert source == f"./kits/{name}", f"{name} mounts {source}"
        assert mode == "ro", f"{name}: the kit must be mounted read-only"
        assert str(service.get("user", "0")).split(":")[0] not in ("0", "root")
        assert service.get("read_only") is True
        assert "ALL" in service.get("cap_drop", [])


def test_compose_nodes_keep_state_on_volumes(compose: dict[str, Any]) -> None:
    for name in ("site-a", "site-b", "site-c"):
        service = compose["services"][name]
        source, mode = _volumes(service)[STATE_DIR]
        assert source in compose["volumes"], f"{name}: {STATE_DIR} is not on a named volume"
        assert mode == "rw"
        # deploy/healthcheck.py's defaults: liveness (service "") on 127.0.0.1:9000
        assert service["healthcheck"]["test"][:2] == ["CMD", "phe-fl-health"]


def _published(entry: str | int | dict[str, Any]) -> tuple[str | None, int]:
    """(host ip, container port) of a compose ports entry, short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("host_ip"), int(entry["target"])
    parts = str(entry).split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else None), int(parts[-1])


def test_compose_nodes_log_json_and_expose_metrics(compose: dict[str, Any]) -> None:
    for name in ("site-a", "site-b", "site-c"):
        service = compose["services"][name]
        env = service.get("environment", {})
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        assert env.get("PHE_FL_LOG_FORMAT") == LOG_FORMAT, f"{name}: logs must be JSON: {env}"
        exposed = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
        published = [_published(p) for p in service.get("ports", [])]
        assert METRICS_PORT in exposed | {port for _, port in published}, (
            f"{name}: metrics port {METRICS_PORT} neither exposed nor published"
        )
        for host, port in published:
            # Plaintext ports (health, metrics) only ever on the host's loopback.
            assert host == "127.0.0.1", f"{name}: port {port} published on {host or 'all'}"


def test_compose_querier_depends_on_the_root(
    compose: dict[str, Any], federation: dict[str, Any]
) -> None:
    services = compose["services"]
    root = next(s["id"] for s in federation["site"] if s.get("role") == "root")
    depends = services["querier"].get("depends_on", [])
    assert root in depends, f"querier depends on {depends}, not on the root {root}"
    assert services["querier"]["environment"]["PHE_FL_ROOT"] == f"{root}:{TREE_PORT}"
    for site in federation["site"]:
        if site["id"] != root:
            assert root in services[site["id"]].get("depends_on", []), site["id"]


def test_federation_example_matches_the_containers(
    compose: dict[str, Any], federation: dict[str, Any]
) -> None:
    sites = federation["site"]
    assert {s["id"] for s in sites} == set(compose["services"]) - {"querier"}
    assert [q["id"] for q in federation["querier"]] == ["querier"]
    for site in sites:
        assert site["health"] == f"0.0.0.0:{HEALTH_PORT}", site["id"]
        assert site["metrics"] == f"0.0.0.0:{METRICS_PORT}", site["id"]
        assert site["state"]["dir"] == f"{STATE_DIR}/{site['id']}", site["id"]
        if site.get("role") == "root":
            assert site["address"] == f"{site['id']}:{TREE_PORT}"
            assert site["listen"] == f"0.0.0.0:{TREE_PORT}"
        else:
            assert federation["tree"][site["id"]], site["id"]


def test_federation_example_provisions_kits_the_containers_run(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    """`phe-fl provision` accepts deploy/federation.toml, and every kit's node.toml loads and
    binds what the containers publish and probe, with its state on the volume."""
    from phe_fl.federation.config import load_node_config
    from phe_fl.federation.provision import load_federation, provision

    fed = load_federation(DEPLOY / "federation.toml")
    result = provision(fed, tmp_path / "kits", tmp_path / "ca")
    assert set(result.kits) == set(compose["services"])
    for site in fed.sites:
        cfg = load_node_config(tmp_path / "kits" / site.id / "node.toml")
        assert cfg.health == f"0.0.0.0:{HEALTH_PORT}", site.id
        assert cfg.metrics == f"0.0.0.0:{METRICS_PORT}", site.id
        assert cfg.state_dir == Path(STATE_DIR) / site.id, site.id
        assert cfg.listen == (f"0.0.0.0:{TREE_PORT}" if site.role != "leaf" else None), site.id


def test_provision_commands_in_comments_name_the_ca() -> None:
    """`phe-fl provision` requires --ca: every command shown in deploy/ gives it."""
    shown = 0
    # Not rglob: deploy/kits, ca and work (git-ignored) may hold keys and unreadable state.
    files = [*DEPLOY.glob("*.md"), *DEPLOY.glob("*.toml"), *DEPLOY.glob("*.yaml")]
    files += [*DEPLOY.glob("*.sh"), *K8S.rglob("*.yaml")]
    for path in sorted(files):
        for line in path.read_text().splitlines():
            if re.search(r"phe-fl provision\s+--federation", line):
                shown += 1
                assert "--ca " in line, f"{path.relative_to(DEPLOY)}: {line.strip()}"
    assert shown >= 3, "README.md, federation.toml and compose.yaml show the command"


def _stages(text: str) -> list[list[str]]:
    """The Containerfile's instructions (continuations joined), split by FROM."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages: list[list[str]] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_containerfile_is_multi_stage_and_non_root() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, re.M), "the base image is an argument"
    stages = _stages(text)
    assert len(stages) >= 2, "builder and runtime stages"
    runtime = stages[-1]
    assert runtime[0].split()[1] == "${BASE_IMAGE}"
    assert any(i.startswith("COPY --from=builder") for i in runtime)
    users = [i.split()[1] for i in runtime if i.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    joined = "\n".join(runtime)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", joined), "no compilers"
    assert 'ENTRYPOINT ["phe-fl"]' in runtime
    assert f'CMD ["node", "--config", "{KIT_DIR}/node.toml"]' in runtime
    assert f'VOLUME ["{STATE_DIR}"]' in runtime
    exposed = {p for i in runtime if i.startswith("EXPOSE ") for p in i.split()[1:]}
    assert {str(HEALTH_PORT), str(METRICS_PORT), str(TREE_PORT)} <= exposed


def test_the_image_can_carry_extras_and_a_sites_own_apps() -> None:
    """A site running FedAvg builds the image with the torch extra, and its apps come
    from its kit (mounted read-only at /kit) without a rebuild."""
    builder, runtime = _stages((DEPLOY / "Containerfile").read_text())[-2:]
    assert "ARG PHE_FL_EXTRAS=" in builder, "no extras by default"
    install = next(i for i in builder if "pip install" in i and "wheel" in i)
    assert '"${wheel}${PHE_FL_EXTRAS:+[$PHE_FL_EXTRAS]}"' in install
    env = " ".join(i for i in runtime if i.startswith("ENV "))
    assert f"PYTHONPATH={KIT_DIR}/apps" in env
    script = (DEPLOY / "build-image.sh").read_text()
    assert '--build-arg "PHE_FL_EXTRAS=${PHE_FL_EXTRAS:-}"' in script


def test_scripts_parse() -> None:
    for script in sorted(DEPLOY.glob("*.sh")):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


@pytest.mark.slow
def test_container_smoke() -> None:
    """deploy/smoke.sh builds the base and node images and runs phe-fl in them. Opt-in
    (PHE_FL_CONTAINER_SMOKE=1): it needs root, podman, debootstrap, a CPython 3.12 build and
    a few minutes."""
    if os.environ.get("PHE_FL_CONTAINER_SMOKE") != "1":
        pytest.skip("set PHE_FL_CONTAINER_SMOKE=1 to build and run the container image")
    proc = subprocess.run(
        ["bash", str(DEPLOY / "smoke.sh")], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
