"""The manifests against the code: every ConfigMap key is a setting the code reads, every container command
is a real CLI command (and, run here with the ConfigMap's environment, really transcribes, skips, shards
and serves), ports and probes are real endpoints, mounts are where the code reads and writes.

Local runs change only what this machine cannot have: paths move to a temporary root, the model becomes the
bundled tiny.en on CPU (int8), enrichment is off, and the server binds a free loopback port."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import DATA
from test_dockerfile import exec_form, parse_dockerfile
from test_k8s_manifests import K8S, REPO, all_containers, by_kind_name, render, standalone, workloads

from transcription.cli import build_parser
from transcription.config import DEFAULT_EMOTION_MODEL, ENV_VARS, ConfigError, load_settings

CLI = Path(sys.executable).parent / "slower-whisper"  # the console script, as in the image's PATH
CONFIGMAP = ("ConfigMap", "slower-whisper-config")
SECRET_NAME = "slower-whisper-secrets"
API_KEY = "k8s-contract-test-key"
# What differs on this machine from a GPU pod; everything else comes from the ConfigMap as written.
LOCAL = {
    "WHISPER_MODEL": "tiny.en",
    "WHISPER_DEVICE": "cpu",
    "WHISPER_COMPUTE_TYPE": "int8",
    "ENABLE_AUDIO_ENRICHMENT": "false",
}
PATH_KEYS = {"SLOWER_WHISPER_ROOT": "data", "HF_HOME": "cache/huggingface"}
# Variables the code reads outside config.py's ENV_VARS, and who provides each in the cluster.
OTHER_VARS = {
    "JOB_COMPLETION_INDEX": "set by Kubernetes in Indexed Jobs",
    "JOB_COMPLETION_COUNT": "set in job-sharded.yaml",
    "HF_HUB_OFFLINE": "documented in k8s/README.md (air-gapped clusters)",
}


@pytest.fixture(scope="module")
def objs() -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind_name(render() + standalone())


@pytest.fixture(scope="module")
def cm(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    return objs[CONFIGMAP]["data"]


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT without the init process in front of the command."""
    [entry] = parse_dockerfile().final.all("ENTRYPOINT")
    argv = exec_form(entry)
    return argv[argv.index("--") + 1 :] if "--" in argv else argv


def container_argv(container: dict[str, Any]) -> list[str]:
    """What the container runs: `command` replaces the image's ENTRYPOINT, `args` its CMD."""
    head = container.get("command") or entrypoint()
    return [*head, *container.get("args", [])]


def the_container(obj: dict[str, Any], name: str = "slower-whisper") -> dict[str, Any]:
    [spec] = [spec for _, o, spec in workloads([obj]) if o is obj]
    return next(c for c in all_containers(spec) if c["name"] == name)


def local_env(cm: dict[str, str], container: dict[str, Any], tmp: Path, **extra: str) -> dict[str, str]:
    """The pod's environment (ConfigMap via envFrom + the container's env) for a run on this machine."""
    managed = set(ENV_VARS.values()) | set(OTHER_VARS)
    env = {k: v for k, v in os.environ.items() if k not in managed}
    assert [f["configMapRef"]["name"] for f in container["envFrom"]] == [CONFIGMAP[1]]
    env.update(cm)
    env.update(LOCAL)
    for key, sub in PATH_KEYS.items():
        env[key] = str(tmp / sub)
    env["HF_HUB_OFFLINE"] = "1"  # no hub here; tiny.en is bundled
    secret = {"SLOWER_WHISPER_API_KEY": API_KEY}  # HF_TOKEN left out: it is optional
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET_NAME, ref
        if ref["key"] in secret:
            env[item["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{item['name']} is required but the test has no value"
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "slower-whisper", argv
    assert CLI.exists(), f"console script {CLI} missing: install the project (pip install -e .)"
    return subprocess.run(
        [str(CLI), *argv[1:]], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def add_input(root: Path, src: Path, rel: str | None = None) -> str:
    rel = rel or src.name
    dest = root / "raw_audio" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return rel


# ------------------------------------------------------------------------------------------ settings


def code_env_vars() -> set[str]:
    """Every environment variable name the package reads: config.py's table plus direct reads elsewhere."""
    names = set(ENV_VARS.values())
    pattern = re.compile(r"""(?:environ|env)(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")
    for path in (REPO / "transcription").rglob("*.py"):
        names |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_configmap_key_is_a_setting_the_code_reads(cm: dict[str, str]) -> None:
    unknown = set(cm) - code_env_vars()
    assert not unknown, f"ConfigMap keys nothing reads: {sorted(unknown)}"


def test_every_variable_the_code_reads_is_provided_or_documented(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str]
) -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    secret_refs = {
        item["name"]
        for _, _, spec in workloads(list(objs.values()))
        for c in all_containers(spec)
        for item in c.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert secret_refs == {"SLOWER_WHISPER_API_KEY", "HF_TOKEN"}
    assert not secret_refs & set(cm), "secrets never go in the ConfigMap"
    for name in sorted(code_env_vars()):
        if name in cm or name in secret_refs:
            continue
        assert name in OTHER_VARS, f"{name} is read by the code but neither configured nor listed here"
        assert f"`{name}`" in readme, f"{name}: k8s/README.md must say what it is and its default"
    sharded = objs[("Job", "slower-whisper-sharded")]
    assert sharded["spec"]["completionMode"] == "Indexed"  # what sets JOB_COMPLETION_INDEX


def test_secret_example_matches_what_pods_reference() -> None:
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text(encoding="utf-8"))
    assert example["metadata"]["name"] == SECRET_NAME
    assert set(example["stringData"]) == {"SLOWER_WHISPER_API_KEY", "HF_TOKEN"}
    assert set(example["stringData"]) <= set(ENV_VARS.values())


def test_configmap_values_are_valid_settings(cm: dict[str, str]) -> None:
    try:
        settings = load_settings(environ=cm)  # as in the pod: cuda
        assert settings.device == "cuda"
    except ConfigError as exc:  # this machine has no GPU: the only acceptable complaint
        assert "WHISPER_DEVICE" in str(exc) and "cuda" in str(exc), exc
    settings = load_settings(environ={**cm, "WHISPER_DEVICE": "cpu"})
    assert settings.language is None, 'WHISPER_LANGUAGE "auto" means detection'
    assert settings.root == Path(cm["SLOWER_WHISPER_ROOT"]) == Path("/data")
    assert settings.hf_home == Path(cm["HF_HOME"]) == Path("/cache/huggingface")
    assert settings.emotion_model == DEFAULT_EMOTION_MODEL
    assert settings.compute_type == "float16" and settings.batch_size > 1


# ------------------------------------------------------------------------------------------ commands


def test_every_container_command_is_a_real_cli_command(objs: dict[tuple[str, str], dict[str, Any]]) -> None:
    parser = build_parser()
    commands = {}
    for label, _, spec in workloads(list(objs.values())):
        for c in all_containers(spec):
            argv = container_argv(c)
            if label == "Pod/slower-whisper-toolbox":
                assert argv == ["sleep", "infinity"]  # coreutils in the image; runs nothing of ours
                continue
            assert argv[0] == "slower-whisper", f"{label}: {argv}"
            try:
                ns = parser.parse_args(argv[1:])
            except SystemExit as exc:
                pytest.fail(f"{label}/{c['name']}: `{' '.join(argv)}` does not parse (exit {exc.code})")
            commands[f"{label}/{c['name']}"] = ns
    assert commands["Deployment/slower-whisper/slower-whisper"].command == "serve"
    for job in ("CronJob/slower-whisper-cron", "Job/slower-whisper-job", "Job/slower-whisper-sharded"):
        ns = commands[f"{job}/slower-whisper"]
        assert ns.command == "transcribe" and ns.root is None and not ns.force, job  # root from the env
    assert {ns.models_command for k, ns in commands.items() if "models-download" in k} == {"download"}


def test_model_download_job_fetches_the_configured_models(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str]
) -> None:
    job = objs[("Job", "slower-whisper-models-download")]
    names = {container_argv(c)[-1] for c in all_containers(job["spec"]["template"]["spec"])}
    assert names == {cm["WHISPER_MODEL"], cm["EMOTION_MODEL"]}
    assert all(
        container_argv(c)[1:3] == ["models", "download"]
        for c in all_containers(job["spec"]["template"]["spec"])
    )


def test_ports_probes_and_scrape_annotations_agree(objs: dict[tuple[str, str], dict[str, Any]]) -> None:
    from transcription.service import create_app

    deploy = objs[("Deployment", "slower-whisper")]
    c = the_container(deploy)
    ns = build_parser().parse_args(container_argv(c)[1:])
    assert ns.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": ns.port} and ns.port == 8000
    [svc_port] = objs[("Service", "slower-whisper")]["spec"]["ports"]
    target = svc_port["targetPort"]
    assert (ports[target] if isinstance(target, str) else target) == ns.port
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ns.port
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert (ports[probe["port"]] if isinstance(probe["port"], str) else probe["port"]) == ns.port
    # The startup probe gives a first start time to download the model (large-v3 is ~3 GiB).
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    app = create_app(load_settings(environ={"WHISPER_DEVICE": "cpu"}))
    routes = {getattr(r, "path", None) for r in app.routes}
    assert {p["path"] for p in probes.values()} | {annotations["prometheus.io/path"]} <= routes


def test_volumes_are_where_the_code_reads_and_writes(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str]
) -> None:
    env = parse_dockerfile().final.env()
    assert env["SLOWER_WHISPER_ROOT"] == cm["SLOWER_WHISPER_ROOT"] == "/data"
    assert env["HF_HOME"] == cm["HF_HOME"] == "/cache/huggingface"
    claim_at = {"slower-whisper-data": cm["SLOWER_WHISPER_ROOT"], "slower-whisper-models": cm["HF_HOME"]}
    for label, _, spec in workloads(list(objs.values())):
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        for c in all_containers(spec):
            mounted = {m["mountPath"]: claims.get(m["name"]) for m in c["volumeMounts"]}
            needs = {"slower-whisper-models"} if "models-download" in label else set(claim_at)
            for claim in needs:
                assert mounted.get(claim_at[claim]) == claim, f"{label}: {claim} at {claim_at[claim]}"
            assert not [m for m in c["volumeMounts"] if m.get("readOnly")], label


def test_grace_period_covers_the_service_shutdown(objs: dict[tuple[str, str], dict[str, Any]]) -> None:
    from transcription.service.app import GRACE_S

    deploy = objs[("Deployment", "slower-whisper")]["spec"]["template"]["spec"]
    assert deploy["terminationGracePeriodSeconds"] > GRACE_S


def test_sharded_job_passes_its_count(objs: dict[tuple[str, str], dict[str, Any]]) -> None:
    job = objs[("Job", "slower-whisper-sharded")]
    spec = job["spec"]
    env = {e["name"]: e.get("value") for e in the_container(job).get("env", [])}
    assert spec["completionMode"] == "Indexed"
    assert int(env["JOB_COMPLETION_COUNT"]) == spec["completions"] == spec["parallelism"] > 1


# ------------------------------------------------------------------------------------------ real runs


def last_run(root: Path) -> dict[str, Any]:
    return json.loads((root / ".slower-whisper" / "last-run.json").read_text(encoding="utf-8"))


@pytest.mark.needs_data
@pytest.mark.slow
def test_job_then_cronjob_transcribe_once_and_skip_after(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str], tmp_path: Path
) -> None:
    """The Job's command transcribes what is in raw_audio; the CronJob's command, run after it, finds
    nothing new and exits 0 at once without rewriting anything (what makes both safe to retry)."""
    root = tmp_path / PATH_KEYS["SLOWER_WHISPER_ROOT"]
    add_input(root, DATA / "en_read" / "jfk" / "jfk.flac")
    job = the_container(objs[("Job", "slower-whisper-job")])
    proc = run(container_argv(job), local_env(cm, job, tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = root / "whisper_json" / "jfk.json"
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert "country" in doc["text"].lower(), doc["text"]
    assert doc["meta"]["model"] and doc["meta"]["device"] == "cpu"
    for fmt in ("txt", "srt", "vtt"):
        assert (root / "transcripts" / f"jfk.{fmt}").is_file()
    assert last_run(root)["done"] == ["jfk.flac"]
    before = out.stat()

    cron_obj = objs[("CronJob", "slower-whisper-cron")]
    cron = next(
        c
        for c in cron_obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        if c["name"] == "slower-whisper"
    )
    started = time.monotonic()
    proc = run(container_argv(cron), local_env(cm, cron, tmp_path))
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = last_run(root)
    assert report["done"] == [] and report["skipped"] == ["jfk.flac"], report
    after = out.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "output rewritten"
    assert elapsed < 30, f"nothing-new run took {elapsed:.1f} s"


@pytest.mark.needs_data
@pytest.mark.slow
def test_indexed_job_shards_cover_every_input_exactly_once(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str], tmp_path: Path
) -> None:
    """Each pod of the Indexed Job, run with the JOB_COMPLETION_INDEX Kubernetes gives it and the count the
    manifest sets, transcribes its own inputs only; together they do every input once."""
    job = objs[("Job", "slower-whisper-sharded")]
    count = job["spec"]["completions"]
    container = the_container(job)
    root = tmp_path / PATH_KEYS["SLOWER_WHISPER_ROOT"]
    clips = [
        DATA / "multilingual" / "en_digits" / "english.wav",
        DATA / "multilingual" / "zh" / "chinese.flac",
        DATA / "multi_speaker" / "stereo_two_speakers" / "stereo_diarization.wav",
        *sorted((DATA / "emotion" / "emodb_de").glob("*.wav")),
    ]
    rels = {add_input(root, clip, f"batch/{clip.name}" if "emodb" in str(clip) else None) for clip in clips}
    assert len(rels) == len(clips) >= count
    for index in range(count):
        env = local_env(cm, container, tmp_path, JOB_COMPLETION_INDEX=str(index))
        proc = run(container_argv(container), env)
        assert proc.returncode == 0, f"shard {index}: {proc.stderr[-3000:]}"
    reports = [
        json.loads(p.read_text(encoding="utf-8")) for p in (root / ".slower-whisper" / "runs").glob("*.json")
    ]
    assert sorted(r["shard"] for r in reports) == [f"{i}/{count}" for i in range(count)]
    done = [rel for r in reports for rel in r["done"]]
    assert sorted(done) == sorted(rels), "every input transcribed exactly once"
    assert sum(r["inputs"] for r in reports) == len(rels), "each shard saw only its own inputs"
    assert all(not r["skipped"] and not r["failed"] and not r["claimed_elsewhere"] for r in reports)
    assert sum(1 for r in reports if r["done"]) >= 2, "the work was actually split"
    for rel in rels:
        assert (root / "whisper_json" / rel).with_suffix(".json").is_file(), rel


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_deployment_command_serves_the_probes(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str], tmp_path: Path
) -> None:
    """The Deployment's command, on loopback and a free port instead of 0.0.0.0:8000, answers the probe and
    scrape paths with 200, guards /v1 with the Secret's key, and stops cleanly within the grace period."""
    deploy = objs[("Deployment", "slower-whisper")]
    c = the_container(deploy)
    argv = container_argv(c)
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    env = local_env(cm, c, tmp_path)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(CLI), *argv[1:]], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        startup = c["startupProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                status = httpx.get(base + startup, timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"startup probe {startup} never answered 200"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            assert httpx.get(base + path, timeout=5).status_code == 200, path
        metrics = httpx.get(
            base + deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        )
        assert metrics.status_code == 200 and "slower_whisper_" in metrics.text
        assert httpx.get(base + "/v1/models", timeout=5).status_code == 401
        ok = httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
        assert ok.status_code == 200, ok.text
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends first
        code = proc.wait(timeout=deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
        assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_deployment_command_refuses_to_serve_without_the_secret(
    objs: dict[tuple[str, str], dict[str, Any]], cm: dict[str, str], tmp_path: Path
) -> None:
    """Without SLOWER_WHISPER_API_KEY (Secret missing) `serve --host 0.0.0.0` exits 2 at once, so the Secret
    reference must stay required (not optional) in the Deployment."""
    deploy = objs[("Deployment", "slower-whisper")]
    c = the_container(deploy)
    [ref] = [e for e in c["env"] if e["name"] == "SLOWER_WHISPER_API_KEY"]
    assert ref["valueFrom"]["secretKeyRef"].get("optional", False) is False
    env = local_env(cm, c, tmp_path)
    del env["SLOWER_WHISPER_API_KEY"]
    argv = container_argv(c)
    argv[argv.index("--port") + 1] = str(free_port())
    proc = run(argv, env, timeout=60)
    assert proc.returncode == 2 and "SLOWER_WHISPER_API_KEY" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------ the guide

SUBCOMMANDS = "transcribe|enrich|watch|serve|models|doctor"


def readme_cli_commands() -> list[str]:
    """Every slower-whisper invocation in k8s/README.md: in code blocks (continuations joined), in inline
    code, and as arguments to the image in `docker run`."""
    text = (K8S / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    snippets = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    lines = [line for block in snippets for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    head = rf"(?:^|\s)slower-whisper(?::\S+)?\s+((?:{SUBCOMMANDS})\b[^#|;&)`]*)"
    for line in lines:
        found += [m.strip() for m in re.findall(head, line)]
    return found


def test_every_cli_command_in_the_guide_parses() -> None:
    commands = readme_cli_commands()
    assert len(commands) >= 8, commands
    parser = build_parser()
    seen = set()
    for command in commands:
        argv = shlex.split(command)
        try:
            ns = parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"k8s/README.md: `slower-whisper {command}` does not parse (exit {exc.code})")
        seen.add(ns.command)
    assert {"transcribe", "serve", "models", "doctor", "watch"} <= seen


def test_every_file_and_object_the_guide_names_exists(objs: dict[tuple[str, str], dict[str, Any]]) -> None:
    text = (K8S / "README.md").read_text(encoding="utf-8")
    for name in set(re.findall(r"([\w.-]+\.yaml)\b", text)):
        assert (K8S / name).is_file(), f"README names missing file {name}"
    kinds = {
        "job": "Job",
        "cronjob": "CronJob",
        "deployment": "Deployment",
        "deploy": "Deployment",
        "svc": "Service",
        "pod": "Pod",
    }
    refs = set(re.findall(r"\b(job|cronjob|deployment|deploy|svc|pod)/([a-z0-9-]+)", text))
    assert refs
    for short, name in refs:
        assert (kinds[short], name) in objs, f"README refers to {short}/{name}, which no manifest defines"
    # Names given as separate words to kubectl (`kubectl delete job A B C`, `describe pvc X`).
    names = {o["metadata"]["name"] for o in objs.values()}
    for match in re.findall(
        r"kubectl (?:delete|describe|wait|get) (?:job|pvc|resourcequota|pod) ([a-z0-9 -]+)", text
    ):
        for name in match.split():
            if name.startswith("slower-whisper"):
                assert name in names, f"README refers to {name}"
