"""deploy/kubernetes: every manifest valid against the Kubernetes API schemas (kubernetes-validate,
offline), and consistent with the app and its image: probes on routes the app serves, the port
the image exposes, the user it runs as, secrets only by reference, a migration Job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release these manifests are meant for (the preStop sleep action is GA
# in 1.30): validated against its schemas, strictly (unknown fields are errors).
KUBERNETES_VERSION = "1.30"


def _kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return loaded


def _resources() -> list[dict[str, Any]]:
    documents = []
    for name in _kustomization()["resources"]:
        documents += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    return documents


def _one(kind: str, component: str | None = None) -> dict[str, Any]:
    found = [r for r in _resources() if r["kind"] == kind]
    if component:
        found = [
            r
            for r in found
            if r["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
    (resource,) = found
    return resource


def _pod(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = _one(kind)["spec"]["template"]["spec"]
    return spec


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize(
    "name", sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_each_manifest_is_valid_against_the_kubernetes_schemas(name: str) -> None:
    for document in yaml.safe_load_all((MANIFESTS / name).read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_broken_manifest() -> None:
    deployment = _one("Deployment")
    deployment["spec"]["replicas"] = "three"
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = (
        "/livez"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_kinds_a_deployment_needs_are_all_there() -> None:
    kinds = sorted(r["kind"] for r in _resources())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "PodDisruptionBudget",
            "Service",
        ]
    )


async def test_three_replicas_with_probes_on_routes_the_app_serves(
    client: httpx.AsyncClient,
) -> None:
    deployment = _one("Deployment")
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    probes = {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }
    scrape_path = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    # A started app (migrated database) answers each of them, without a token.
    for path in {*probes.values(), scrape_path}:
        assert (await client.get(path)).status_code == 200, path


def test_the_ports_agree_with_the_image() -> None:
    (exposed,) = re.findall(r"^EXPOSE (\d+)$", _dockerfile(), re.MULTILINE)
    deployment = _one("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == int(exposed)
    assert container["command"][-2:] == ["--port", exposed]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[kind]["httpGet"]["port"] == port["name"]
    (service_port,) = _one("Service")["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == exposed


def test_the_job_migrates_with_the_deployments_image() -> None:
    (job_container,) = _pod("Job")["containers"]
    (app_container,) = _pod("Deployment")["containers"]
    assert job_container["command"] == ["junction", "migrate"]
    assert job_container["image"] == app_container["image"]
    assert _pod("Job")["restartPolicy"] == "Never"
    (image,) = _kustomization()["images"]
    assert image["name"] == app_container["image"]


def test_the_selectors_match_the_pods() -> None:
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        _one("Deployment")["spec"]["selector"]["matchLabels"],
        _one("Service")["spec"]["selector"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    target = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        _one("Deployment")["metadata"]["name"],
    )
    assert _one("HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_secrets_are_only_referenced(kind: str) -> None:
    assert not [r for r in _resources() if r["kind"] == "Secret"], "a Secret with values"
    (container,) = _pod(kind)["containers"]
    for variable in container["env"]:
        assert "value" not in variable, f"{variable['name']} has a value written in"
        assert variable["valueFrom"]["secretKeyRef"]["name"] == "junction-secrets"
    settings = _one("ConfigMap")["data"]
    secret_names = {"DATABASE_URL", "REDIS_URL", "AUTH_JWT_SECRET", "ENCRYPTION_KEYS"}
    assert not secret_names & settings.keys()
    assert {"configMapRef": {"name": "junction-settings"}} in container["envFrom"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_images_user_on_a_read_only_root(kind: str) -> None:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", _dockerfile(), re.MULTILINE)
    pod = _pod(kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        str(pod["securityContext"]["runAsUser"]),
        str(pod["securityContext"]["runAsGroup"]),
    ) == user
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
