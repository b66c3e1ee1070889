"""The container image recipe: what it is built from, what it installs and in which order, who it runs as,
and (slow) its install steps replayed in a clean folder holding only what the Dockerfile copies. No Docker
engine here, so the replay runs the same `uv sync` commands against the same lock without the CUDA-sized
emotion extra. The parser below is shared with test_k8s_contract.py."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
# The replay swaps the `full` extra (enrich + emotion + service; emotion pulls CUDA torch, GBs) for the
# extras that install here in seconds; everything else in each command stays as written.
REPLAY_EXTRAS = "--extra service --extra enrich"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARG defaults declared before the first FROM
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m[1] or m[2], m[0]), text)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Instructions per stage, continuation lines joined, comment lines dropped (as Docker does)."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM, got {keyword}"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from another stage)."""
    out = []
    for args in stage.all("COPY"):
        parts = shlex.split(args)
        if any(p.startswith("--from=") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def dockerignore_included(root: Path) -> set[str]:
    """Files the build context holds: .dockerignore rules in order, last match wins, `!` re-includes, and a
    rule matching a folder covers what is inside it."""
    rules = []
    for raw in (root / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negate, pattern))

    def matches(pattern: str, rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            return any(
                fnmatch.fnmatchcase(c.split("/")[-1], tail) or fnmatch.fnmatchcase(c, tail)
                for c in candidates
            )
        return any(fnmatch.fnmatchcase(c, pattern) and c.count("/") == pattern.count("/") for c in candidates)

    included = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv")]  # never in a context, and huge
        for name in filenames:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            excluded = False
            for negate, pattern in rules:
                if matches(pattern, rel):
                    excluded = not negate
            if not excluded:
                included.add(rel)
    return included


@pytest.fixture(scope="module")
def df() -> Dockerfile:
    return parse_dockerfile()


# ------------------------------------------------------------------------------------------ static


def test_runtime_base_is_cuda12_with_cudnn9_on_ubuntu_2204(df: Dockerfile) -> None:
    base = df.resolve(df.final.base)
    # CTranslate2 >= 4.5 needs cuBLAS 12 and cuDNN 9: a "-cudnn-runtime" image; plain "-runtime" has no cuDNN.
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu22\.04", base), base
    build = df.stage("build")
    assert build.base == "ubuntu:22.04", "build and runtime must share Ubuntu 22.04's /usr/bin/python3.10"


def test_system_packages(df: Dockerfile) -> None:
    runtime = " ".join(df.final.all("RUN"))
    for package in ("python3.10", "ffmpeg", "tini", "ca-certificates"):
        assert re.search(rf"install -y --no-install-recommends [^&]*\b{re.escape(package)}\b", runtime), (
            package
        )
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    build_env = df.stage("build").env()
    assert build_env["UV_PYTHON"] == "/usr/bin/python3.10"
    assert build_env["UV_PYTHON_DOWNLOADS"] == "never"
    assert build_env["UV_PROJECT_ENVIRONMENT"] == "/app/.venv"


def test_dependencies_are_installed_before_the_source_is_copied(df: Dockerfile) -> None:
    """Layer caching: a code change must not reinstall the dependencies."""
    steps = [(kw, args) for kw, args in df.stage("build").instructions if kw in ("COPY", "RUN")]
    kinds = []
    for kw, args in steps:
        if kw == "COPY" and "--from=" not in args:
            kinds.append(
                "copy-lock" if "uv.lock" in args else "copy-src" if "transcription/" in args else "copy"
            )
        elif kw == "RUN" and "uv sync" in args:
            assert "--frozen" in args and "--extra full" in args, args
            kinds.append("deps" if "--no-install-project" in args else "project")
    assert kinds == ["copy-lock", "deps", "copy", "copy-src", "project"], kinds
    [lock_copy] = [s for s, _ in copy_sources(df.stage("build")) if "uv.lock" in s]
    assert lock_copy == ["pyproject.toml", "uv.lock"]


def test_runtime_user_paths_port_and_entrypoint(df: Dockerfile) -> None:
    final = df.final
    users = final.all("USER")
    assert users == ["1000:1000"]
    user_at = final.instructions.index(("USER", "1000:1000"))
    assert all(kw != "RUN" for kw, _ in final.instructions[user_at:]), "nothing runs as root after USER"
    runs = " ".join(final.all("RUN"))
    assert "useradd --uid 1000 --gid 1000" in runs
    assert "chown 1000:1000 /data /cache/huggingface" in runs
    env = final.env()
    assert env["HF_HOME"] == "/cache/huggingface"
    assert env["SLOWER_WHISPER_ROOT"] == "/data"
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert final.all("EXPOSE") == ["8000"]
    [entry] = final.all("ENTRYPOINT")
    assert exec_form(entry) == ["/usr/bin/tini", "-g", "--", "slower-whisper"]
    # The entrypoint is the console script the package declares.
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^slower-whisper = "transcription\.cli:main"$', pyproject, re.M)
    [cmd] = final.all("CMD")
    assert exec_form(cmd) == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_dockerignore_keeps_only_what_the_dockerfile_copies(df: Dockerfile) -> None:
    included = dockerignore_included(REPO)
    for sources, _ in copy_sources(df.stage("build")):
        for src in sources:
            hits = [f for f in included if f == src or f.startswith(src.rstrip("/") + "/")]
            if src == "uv.lock" and not (REPO / src).exists():
                pytest.fail("uv.lock is missing: the image installs from the committed lock (run `uv lock`)")
            assert hits, f"COPY {src}: not in the build context"
    assert any(f.startswith("transcription/") and f.endswith(".py") for f in included)
    assert (REPO / "transcription" / "transcript.schema.json").is_file()
    assert "transcription/transcript.schema.json" in included, "package data must reach the image"
    for f in included:
        assert f in ("pyproject.toml", "uv.lock", "README.md") or f.startswith("transcription/"), f
        assert "__pycache__" not in f and not f.endswith(".pyc"), f


# ------------------------------------------------------------------------------------------ replay


def _replay_env(df: Dockerfile, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    for key, value in df.stage("build").env().items():
        if key == "DEBIAN_FRONTEND":
            continue
        env[key] = value
    # The only substitutions: paths into the temporary folder, and this machine's Python (3.11; the image
    # has 3.10, which the lock also covers).
    env["UV_PROJECT_ENVIRONMENT"] = str(workdir / ".venv")
    env["UV_PYTHON"] = sys.executable
    return env


@pytest.mark.slow
def test_install_steps_build_a_working_cli(df: Dockerfile, tmp_path: Path) -> None:
    """Replays the build stage: the build context (after .dockerignore) is copied, then each COPY and each
    `uv sync` RUN is executed in order in a clean folder."""
    if not (REPO / "uv.lock").exists():
        pytest.fail("uv.lock is missing: the Dockerfile installs with `uv sync --frozen` from the lock")
    context = tmp_path / "context"
    for rel in dockerignore_included(REPO):
        dest = context / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    build = df.stage("build")
    [workdir_arg] = build.all("WORKDIR")
    assert workdir_arg == "/app"
    app = tmp_path / "app"
    app.mkdir()
    env = _replay_env(df, app)
    uv = str(Path(sys.executable).parent / "uv") if (Path(sys.executable).parent / "uv").exists() else "uv"
    script = app / ".venv" / "bin" / "slower-whisper"
    synced = 0
    for keyword, args in build.instructions:
        if keyword == "COPY" and "--from=" not in args:
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            *sources, dest = parts
            target = app if dest in ("./", ".") else app / dest
            for src in sources:
                path = context / src
                assert path.exists(), f"COPY {src}: not in the build context"
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
        elif keyword == "RUN" and "uv sync" in args:
            command = re.sub(r"--mount=\S+\s*", "", args).strip()
            command = command.replace("--extra full", REPLAY_EXTRAS).replace("/app/", f"{app}/")
            first, *more = command.split(" && ")  # `uv sync ...`, then any `uv pip install ...` after it
            argv = shlex.split(first)
            assert argv[:2] == ["uv", "sync"], command
            for part in [first, *more]:
                step = shlex.split(part)
                assert step[0] == "uv" and step[1] in ("sync", "pip"), part
                proc = subprocess.run(
                    [uv, *step[1:]], cwd=app, env=env, capture_output=True, text=True, timeout=600
                )
                assert proc.returncode == 0, f"{part}\n{proc.stderr[-4000:]}"
            synced += 1
            if "--no-install-project" in argv:
                # The dependency layer must not contain the project: the code is not there yet.
                assert not script.exists(), "the dependency layer installed the project"
                assert (app / ".venv" / "bin" / "uvicorn").exists(), "service extra missing"
    assert synced == 2
    # The embedded diarizer's weights, shipped inside the package.
    assert list((app / ".venv").glob("lib/python*/site-packages/transcription/diarize/voice_encoder.npz"))
    for args in (["--help"], ["serve", "--help"], ["transcribe", "--help"], ["models", "list", "--help"]):
        proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    # Installed as a package (not editable): the schema file ships inside site-packages.
    proc = subprocess.run(
        [
            str(app / ".venv" / "bin" / "python"),
            "-c",
            "import transcription, pathlib; p = pathlib.Path(transcription.__file__).parent; "
            "print(p); assert (p / 'transcript.schema.json').is_file()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" in proc.stdout, proc.stdout


def test_locked_torch_is_a_cuda12_build_like_the_image() -> None:
    """CTranslate2 (from the base image's CUDA 12 + cuDNN 9) and torch (emotion model) share one process and
    one libcudnn.so.9: torch from the lock must be a CUDA 12 build too. PyPI's torch >= 2.12 for Linux is a
    CUDA 13 build (cuda-toolkit 13, nvidia-cudnn-cu13), which also needs a driver >= 580. The image's build
    runs the same check on the installed torch."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    torches = [p for p in lock["package"] if p["name"] == "torch"]
    assert torches, "torch is not in uv.lock (the full extra needs it)"
    for pkg in torches:
        deps = {d["name"] for d in pkg.get("dependencies", [])}
        assert "nvidia-cudnn-cu12" in deps, (
            f"torch {pkg['version']} in uv.lock is not a CUDA 12 build: {deps}"
        )
        assert not {d for d in deps if d.endswith("-cu13") or d == "cuda-toolkit"}, pkg["version"]
