"""deploy/k8s/: valid manifests (kubernetes-validate's schemas), consistent with each other,
with the worker's settings and with the image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.scoring import load_plans
from streams.worker.settings import OPTIONS
from tests.deploy.tools import DEPLOY, load_yaml_documents

K8S = DEPLOY / "k8s"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes the manifests are meant for, and the newest the schemas know."""
BENCH_PEAK_RSS = 460 * 2**20
"""bench/results/worker.md: 432-456 MiB RSS at 100,000 to 1,000,000 contacts."""


def _resources() -> dict[str, dict[str, Any]]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc
        for path in MANIFESTS
        for doc in load_yaml_documents(path)
    }


def _worker() -> tuple[dict[str, Any], dict[str, Any]]:
    statefulset = _resources()["StatefulSet/leadscore"]
    pod = statefulset["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "worker")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def _quantity(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"(\d+)(\w*)", text)
    assert match, text
    return int(match[1]) * units.get(match[2], 1)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid(path: Path) -> None:
    for document in load_yaml_documents(path):
        for version in VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)


def test_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    expected = {p.name for p in MANIFESTS if ".example." not in p.name}
    assert set(kustomization["resources"]) == expected


def test_the_plans_config_map_holds_valid_plans(tmp_path: Path) -> None:
    config_map = _resources()["ConfigMap/leadscore-plans"]
    plans = tmp_path / "plans.yaml"
    plans.write_text(config_map["data"]["plans.yaml"])
    assert load_plans(plans).plans
    pod, worker = _worker()
    mounted = next(m for m in worker["volumeMounts"] if m["name"] == "plans")
    assert _env(worker)["LEADSCORE_PLANS"]["value"] == f"{mounted['mountPath']}/plans.yaml"
    volume = next(v for v in pod["volumes"] if v["name"] == "plans")
    assert volume["configMap"]["name"] == "leadscore-plans"


def test_every_variable_is_a_worker_setting() -> None:
    known = {option.env_name for option in OPTIONS}
    _, worker = _worker()
    set_ = {name for name in _env(worker) if name.startswith("LEADSCORE_")}
    assert set_ <= known, set_ - known


def test_each_pod_advertises_its_stable_name_on_the_headless_service() -> None:
    resources = _resources()
    statefulset = resources["StatefulSet/leadscore"]
    headless = resources[f"Service/{statefulset['spec']['serviceName']}"]
    assert headless["spec"]["clusterIP"] == "None"
    _, worker = _worker()
    url = _env(worker)["LEADSCORE_ADVERTISED_URL"]["value"]
    assert url == f"http://$(POD_NAME).{headless['metadata']['name']}.$(POD_NAMESPACE).svc:6066"
    assert {"POD_NAME", "POD_NAMESPACE"} <= set(_env(worker))
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for name in ("Service/leadscore", f"Service/{headless['metadata']['name']}"):
        assert resources[name]["spec"]["selector"].items() <= labels.items()
    pdb = resources["PodDisruptionBudget/leadscore"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_state_lives_on_a_claim_per_pod() -> None:
    statefulset = _resources()["StatefulSet/leadscore"]
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    _, worker = _worker()
    data_dir = _env(worker)["LEADSCORE_DATA_DIR"]["value"]
    assert {m["name"] for m in worker["volumeMounts"] if m["mountPath"] == data_dir} <= claims


def test_probes_resources_and_user() -> None:
    pod, worker = _worker()
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    memory = worker["resources"]["requests"]["memory"]
    assert _quantity(memory) >= BENCH_PEAK_RSS
    assert _quantity(worker["resources"]["limits"]["memory"]) > _quantity(memory)
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (DEPLOY / "worker" / "Dockerfile").read_text()
    assert re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)[-1] == str(
        pod["securityContext"]["runAsUser"]
    )
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False


def test_sasl_credentials_come_from_the_secret() -> None:
    pod, worker = _worker()
    env = _env(worker)
    assert env["LEADSCORE_SECURITY_PROTOCOL"]["value"].startswith("SASL_")
    assert "LEADSCORE_SASL_PASSWORD" not in env  # a file from the Secret instead
    secret = env["LEADSCORE_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == secret
    mount = next(m for m in worker["volumeMounts"] if m["name"] == volume["name"])
    password_file = env["LEADSCORE_SASL_PASSWORD_FILE"]["value"]
    assert password_file.startswith(mount["mountPath"] + "/") and mount["readOnly"]
