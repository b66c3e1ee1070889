"""`slower-whisper doctor`: what this process would use, and whether it can work."""

from __future__ import annotations

import ctypes.util
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import models
from .config import ENV_VARS, Settings

_SECRETS = ("hf_token", "api_key")


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        return "not on PATH (not needed: decoding uses PyAV's bundled FFmpeg)"
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} (failed to run: {exc})"
    return f"{path} ({out.splitlines()[0] if out else 'unknown version'})"


def _cuda() -> dict[str, Any]:
    try:
        import ctranslate2

        count = ctranslate2.get_cuda_device_count()
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        return {"devices": 0, "error": str(exc)}
    info: dict[str, Any] = {"devices": count}
    if count:
        info["compute_types"] = sorted(ctranslate2.get_supported_compute_types("cuda"))
    info["cudnn"] = ctypes.util.find_library("cudnn") or ctypes.util.find_library("cudnn_ops") or "not found"
    info["cublas"] = ctypes.util.find_library("cublas") or "not found"
    return info


def report(settings: Settings) -> dict[str, Any]:
    problems: list[str] = []
    try:
        device = settings.resolved_device()
        compute_type = settings.resolved_compute_type()
    except Exception as exc:  # noqa: BLE001
        device, compute_type = f"error: {exc}", "unknown"
        problems.append(str(exc))
    located = models.locate(settings.model, settings)
    if located.source == "missing":
        problems.append(
            f"model {settings.model!r} not available locally: slower-whisper models download {settings.model}"
        )
    try:
        import av

        pyav_ffmpeg = ".".join(str(p) for p in av.library_versions.get("libavcodec", ()))
    except Exception as exc:  # noqa: BLE001
        pyav_ffmpeg = f"unavailable: {exc}"
        problems.append("PyAV cannot be imported: no audio can be decoded")
    speakers = _diarizer(settings)
    if settings.diarize and speakers["problem"]:
        problems.append(speakers["problem"])
    effective = {name: getattr(settings, name) for name in ENV_VARS}
    for secret in _SECRETS:
        effective[secret] = "set" if effective[secret] else "not set"
    return {
        "ok": not problems,
        "problems": problems,
        "device": {"requested": settings.device, "resolved": device, "compute_type": compute_type},
        "cuda": _cuda(),
        "python": platform.python_version(),
        "libraries": {
            d: _version(d)
            for d in (
                "slower-whisper",
                "faster-whisper",
                "ctranslate2",
                "av",
                "numpy",
                "torch",
                "transformers",
                "fastapi",
                "uvicorn",
            )
        },
        "ffmpeg": {"system": _ffmpeg(), "pyav_libavcodec": pyav_ffmpeg},
        "model": {
            "name": settings.model,
            "source": located.source,
            "path": str(located.path) if located.path else None,
            "repo": located.repo,
            "cache": str(models.hub_cache_dir(settings)),
        },
        "speakers": speakers,
        "settings": {k: str(v) if v is not None else None for k, v in effective.items()},
    }


def _diarizer(settings: Settings) -> dict[str, Any]:
    """Which diarizer `--diarize` would use and whether it is installed (nothing is loaded)."""
    if settings.diarization_model:
        import importlib.util

        found = importlib.util.find_spec("pyannote") is not None
        problem = (
            None
            if found
            else "DIARIZATION_MODEL needs pyannote.audio: pip install 'slower-whisper[pyannote]'"
        )
        if found and not settings.hf_token and not Path(settings.diarization_model).exists():
            problem = "DIARIZATION_MODEL names a hub pipeline but HF_TOKEN is not set"
        return {"model": settings.diarization_model, "problem": problem}
    from .diarize.embedding import EmbeddingModelMissing, weights_path

    try:
        return {"model": "embedded", "weights": str(weights_path()), "problem": None}
    except EmbeddingModelMissing as exc:
        return {"model": "embedded", "weights": None, "problem": str(exc)}
