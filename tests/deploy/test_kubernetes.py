"""deploy/kubernetes: every kustomization renders, every object is valid at the Kubernetes
versions the pack supports, and the Deployment does what the router needs (probes, a grace
period above the router's own stop time, sizing from the benchmark, no inline secret).

Validation is offline: kubernetes-validate ships the API's JSON schemas per release; strict
mode refuses unknown fields, so a typo such as `livenessProbez` fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from router.cli import build_parser
from router.config import SECRET_FILE_KEYS, build_config
from tests.deploy.kustomize import Object, identity, render

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/staging", "overlays/production"]
# The oldest release the pack needs (the preStop `sleep` action is on by default from 1.30)
# and the newest whose schemas kubernetes-validate ships; docs/deploy.md names both.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# router/server/run.py: the admin listener gets 2 s to close after the proxy's shutdown_timeout.
ADMIN_CLOSE = 2.0
# Room left for closing the Redis connections and the process exiting.
MARGIN = 5.0


def rendered(name: str) -> list[Object]:
    return render(KUBE / name)


def only(objects: list[Object], kind: str) -> Object:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: list[Object]) -> dict[str, Any]:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    found: dict[str, Any] = pod["containers"][0]
    return found


def router_toml(objects: list[Object]) -> dict[str, Any]:
    config_map = only(objects, "ConfigMap")
    return tomllib.loads(config_map["data"]["router.toml"])


# --- offline validation ----------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid(name: str, version: str) -> None:
    objects = rendered(name)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_can_fail() -> None:
    deployment = only(rendered("base"), "Deployment")
    probe = container([deployment]).pop("livenessProbe")
    container([deployment])["livenessProbez"] = probe
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def _real_kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(
            ["kubectl", "kustomize", "--help"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendering_matches_real_kustomize(name: str) -> None:
    command = _real_kustomize()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: only the built-in rendering")
    out = subprocess.run(
        [*command, str(KUBE / name)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=identity)
    ours = sorted(rendered(name), key=identity)
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


# --- what the router needs of the Deployment ----------------------------------------------


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_and_ports(name: str) -> None:
    objects = rendered(name)
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    toml = router_toml(objects)["router"]
    assert ports == {"proxy": _port(toml["listen"]), "admin": _port(toml["admin_listen"])}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # Liveness must not follow readiness: a Redis outage (degraded) or a stop in progress
    # must never get the routers restarted.
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 30


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_command_reads_the_config_map(name: str) -> None:
    """The container runs `token-router serve` on the file the ConfigMap is mounted as."""
    objects = rendered(name)
    c = container(objects)
    args = build_parser().parse_args(c["args"])
    assert args.command == "serve"
    config_path = Path(args.config)
    mount = next(m for m in c["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == only(objects, "ConfigMap")["metadata"]["name"]
    assert config_path.name in only(objects, "ConfigMap")["data"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_grace_period_covers_the_routers_stop(name: str) -> None:
    objects = rendered(name)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    pre_stop = container(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    config = _config(objects)
    stop = pre_stop + config.router.stop_delay + config.router.shutdown_timeout + ADMIN_CLOSE
    assert pod["terminationGracePeriodSeconds"] >= stop + MARGIN


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_hardened(name: str) -> None:
    objects = rendered(name)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
    assert pod["automountServiceAccountToken"] is False
    sc = container(objects)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def _workers(c: dict[str, Any]) -> int:
    args = c["args"]
    return int(args[args.index("--workers") + 1]) if "--workers" in args else 1


def _mib(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_resources_from_the_measured_rss(name: str) -> None:
    """Requests hold what the benchmark measured (bench/results/latest.json, peak RSS in KiB)
    for the pod's number of workers; the limit leaves room above it."""
    rss = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())["rss_kib"]
    c = container(rendered(name))
    workers = _workers(c)
    if workers == 1:
        measured = rss["router_w1"] / 1024
    else:
        per_worker = max(rss["router_w2_workers"])
        measured = (rss["router_w2_supervisor"] + workers * per_worker) / 1024
    resources = c["resources"]
    assert _mib(resources["requests"]["memory"]) >= measured
    assert _mib(resources["limits"]["memory"]) >= 1.5 * measured
    assert resources["requests"]["cpu"] and resources["limits"]["cpu"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_writable_paths_are_volumes(name: str) -> None:
    objects = rendered(name)
    c = container(objects)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    release_dir = router_toml(objects)["router"]["release_dir"]
    archive = volumes[mounts[release_dir]["name"]]
    claim = archive["persistentVolumeClaim"]["claimName"]
    pvc = only(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    # Every replica mounts it: several instances may share one archive.
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/token-router"]["readOnly"] is True


# --- configuration and secrets -----------------------------------------------------------


def _config(objects: list[Object], tmp: Path | None = None) -> Any:
    """The ConfigMap's router.toml through token-router's own validation, with the secret
    files it names stood in by files holding sample values."""
    doc = router_toml(objects)
    router = doc["router"]
    if tmp is not None:
        for key in [k for k in router if k.endswith("_file")]:
            stand_in = tmp / key
            stand_in.write_text(f"{key}-Sample-0123456789-xyz\n")
            router[key] = str(stand_in)
    else:
        for key in [k for k in router if k.endswith("_file")]:
            del router[key]
    return build_config(doc, {})


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_config_is_valid_for_the_router(name: str, tmp_path: Path) -> None:
    config = _config(rendered(name), tmp_path)
    assert config.router.redis_sentinels, "Redis goes through Sentinel"
    assert config.router.admin_token is not None and config.router.preview_secret is not None
    assert config.router.redis_password is not None


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_no_secret_is_inline(name: str) -> None:
    objects = rendered(name)
    assert not [o for o in objects if o["kind"] == "Secret"], "Secrets are created outside"
    router = router_toml(objects)["router"]
    for key in (*SECRET_FILE_KEYS, "admin_token"):
        assert key not in router, f"router.{key} inline: use {key}_file"
    assert all(k.endswith("_file") for k in router.get("admin_tokens", {}))
    c = container(objects)
    for var in c.get("env", []):
        name_ = var["name"].upper()
        if any(word in name_ for word in ("TOKEN", "SECRET", "PASSWORD")):
            raise AssertionError(f"{var['name']} in the environment: secrets are files")
    # Every *_file the configuration names is an item of the Secret volume.
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    secrets = next(v for v in pod["volumes"] if v["name"] == "secrets")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "secrets")
    assert mount["readOnly"] is True
    files = {
        f"{mount['mountPath']}/{item['path']}"
        for source in secrets["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    named = {v for k, v in router.items() if k.endswith("_file")}
    assert named and named <= files


# --- who reaches what ------------------------------------------------------------------------


def test_services_pdb_and_network_policy() -> None:
    objects = rendered("base")
    pods = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(pods.get(k) == v for k, v in selector.items())

    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert {n: [p["targetPort"] for p in s["spec"]["ports"]] for n, s in services.items()} == {
        "token-router": ["proxy"],
        "token-router-admin": ["admin"],
    }
    assert all(selects(s["spec"]["selector"]) for s in services.values())
    pdb = only(objects, "PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"]["matchLabels"]) and pdb["maxUnavailable"] == 1

    policy = only(objects, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"])
    assert policy["policyTypes"] == ["Ingress"]
    allowed: dict[str, list[str]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from") and rule.get("ports"), "no rule may allow everyone or every port"
        for port in rule["ports"]:
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                ns = peer["namespaceSelector"]["matchLabels"]["token-router.io/access"]
                pod = peer.get("podSelector", {}).get("matchLabels", {})
                who = ns if not pod else f"{ns}/{pod['token-router.io/access']}"
                allowed.setdefault(port["port"], []).append(who)
    assert allowed == {
        "proxy": ["web-app/web-app", "ingress"],
        "admin": ["operators", "monitoring"],
    }
