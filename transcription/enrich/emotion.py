"""Speech emotion per segment (arousal, valence, dominance), from a wav2vec2 regression model.

Torch and transformers are imported lazily (the ``emotion`` extra); without them, or without the model's
weights, :func:`score_segments` raises :class:`EmotionUnavailable` with the reason, and the caller marks
emotion ``failed`` while prosody still completes.

The model is loaded once per process per (directory, device) and shared by all threads; inference calls
are serialised on it, which bounds memory to one batch at a time. Segments longer than ``WINDOW_S`` are
cut into equal windows whose raw scores are averaged, weighted by window length, before clipping.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transcription import hardware
from transcription.audio import SAMPLE_RATE
from transcription.config import DEFAULT_EMOTION_MODEL, Settings
from transcription.errors import UsageError

from .source import AudioInput, as_source

if TYPE_CHECKING:
    from .emotion_model import Wav2Vec2EmotionRegressor

WINDOW_S = 10.0  # the audeering model was fine-tuned on MSP-Podcast turns of a few seconds up to ~11 s
MIN_SEGMENT_S = 0.5  # below this the model has too few frames for a meaningful pooled state
BATCH_WINDOWS = 8
GROUP_WINDOWS = 64  # windows read and length-sorted together: bounds memory on long files
KNOWN_LICENCES = {DEFAULT_EMOTION_MODEL: "CC-BY-NC-SA-4.0"}
# Files worth fetching: configs and PyTorch weights, not the ONNX export some repositories carry.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "*.md", "LICENSE*"]


class EmotionUnavailable(UsageError, RuntimeError):
    """Emotion cannot run in this process (missing packages, weights, or a checkpoint that does not fit).

    Enrichment catches it and marks the feature failed; only `models download` lets it reach the user."""


@dataclass
class LoadedModel:
    model: Wav2Vec2EmotionRegressor
    order: tuple[str, ...]  # output names in output order
    device: str
    path: Path
    revision: str | None  # hub commit when the model came from the Hugging Face cache
    normalize: bool  # zero-mean unit-variance per input, as the feature extractor config says
    normalize_source: str
    lock: threading.Lock


_CACHE: dict[tuple[str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def licence(model_ref: str) -> str | None:
    return KNOWN_LICENCES.get(model_ref)


def _is_local_ref(ref: str) -> bool:
    return (
        Path(ref).expanduser().exists() or ref.startswith(("/", "./", "../", "~", "\\")) or ref.count("/") > 1
    )


def _cache_dir(settings: Settings) -> Path | None:
    return Path(settings.hf_home) / "hub" if settings.hf_home else None


def resolve_emotion_model(settings: Settings) -> tuple[Path, str | None]:
    """(directory, hub revision or None) of the configured model, without touching the network."""
    ref = settings.emotion_model
    if _is_local_ref(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise EmotionUnavailable(f"emotion model directory {path} does not exist")
        return path, None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a core dependency
        raise EmotionUnavailable(f"huggingface_hub is not installed: {exc}") from exc
    try:
        folder = snapshot_download(
            ref, cache_dir=_cache_dir(settings), token=settings.hf_token, local_files_only=True
        )
    except LocalEntryNotFoundError:
        where = _cache_dir(settings) or "the default Hugging Face cache"
        raise EmotionUnavailable(
            f"emotion model {ref} is not in {where}; fetch it with `slower-whisper models download {ref}`"
            + _licence_note(ref)
        ) from None
    path = Path(folder)
    return path, path.name


def _licence_note(ref: str) -> str:
    lic = licence(ref)
    return f" (licence {lic}: non-commercial use only)" if lic == "CC-BY-NC-SA-4.0" else ""


def emotion_model_info(settings: Settings) -> dict[str, Any]:
    """What ``models list`` shows: name, where it lives, whether it is usable offline, its licence."""
    ref = settings.emotion_model
    info: dict[str, Any] = {"name": ref, "kind": "emotion", "licence": licence(ref), "path": None}
    try:
        path, revision = resolve_emotion_model(settings)
    except EmotionUnavailable as exc:
        info.update(available=False, reason=str(exc))
        return info
    missing = _missing_files(path)
    info.update(path=str(path), revision=revision, available=not missing)
    if missing:
        info["reason"] = f"{path} lacks {', '.join(missing)}"
    return info


def emotion_model_status(settings: Settings) -> str:
    """One line for ``models list``."""
    info = emotion_model_info(settings)
    lic = info["licence"] or "see the model card"
    if info["available"]:
        return f"{info['name']}  emotion  cached at {info['path']}  licence {lic}"
    return f"{info['name']}  emotion  NOT AVAILABLE: {info['reason']}  licence {lic}"


def _missing_files(path: Path) -> list[str]:
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")) and not any(
        path.glob("model-*.safetensors")
    ):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    return missing


def download_emotion_model(settings: Settings) -> Path:
    """Fetch the configured hub model into the cache (HF_HOME); returns its snapshot directory."""
    ref = settings.emotion_model
    if _is_local_ref(ref):
        raise EmotionUnavailable(f"{ref} is a local path, not a Hugging Face model id: nothing to download")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        folder = snapshot_download(
            ref, cache_dir=_cache_dir(settings), token=settings.hf_token, allow_patterns=DOWNLOAD_PATTERNS
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise EmotionUnavailable(
            f"cannot download {ref}: the Hugging Face hub is unreachable or offline mode is on "
            "(HF_HUB_OFFLINE); run this where the hub is reachable and copy "
            f"{_cache_dir(settings) or 'the cache'}"
            f" ({exc.__class__.__name__})"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise EmotionUnavailable(f"cannot download {ref}: {exc}") from exc
    path = Path(folder)
    missing = _missing_files(path)
    if missing:
        raise EmotionUnavailable(f"download of {ref} is incomplete: {', '.join(missing)} missing in {path}")
    return path


def _normalisation(path: Path) -> tuple[bool, str]:
    """Whether inputs are normalised, and where that decision came from (for meta)."""
    config = path / "preprocessor_config.json"
    if not config.is_file():
        # wav2vec2 checkpoints fine-tuned with normalisation (large-robust ones) expect it; say so explicitly.
        return True, "no preprocessor_config.json: zero-mean unit-variance normalisation applied"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmotionUnavailable(f"{config} is unreadable: {exc}") from exc
    rate = data.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise EmotionUnavailable(
            f"{config}: model expects {rate} Hz audio, the pipeline provides {SAMPLE_RATE} Hz"
        )
    do_normalize = bool(data.get("do_normalize", True))
    return do_normalize, f"preprocessor_config.json do_normalize={str(do_normalize).lower()}"


def load_emotion_model(settings: Settings) -> LoadedModel:
    """The process-wide model for these settings, loaded on first use."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise EmotionUnavailable(
            f"emotion needs torch and transformers (install slower-whisper[emotion]): {exc}"
        ) from exc
    path, revision = resolve_emotion_model(settings)
    device = hardware.torch_device(settings.device)
    key = (str(path.resolve()), device)
    with _CACHE_LOCK:
        loaded = _CACHE.get(key)
        if loaded is not None:
            return loaded
        from .emotion_model import EmotionModelLoadError, load_strict

        missing = _missing_files(path)
        if missing:
            raise EmotionUnavailable(f"emotion model at {path} lacks {', '.join(missing)}")
        normalize, source = _normalisation(path)
        try:
            model, order = load_strict(path, device)
        except EmotionModelLoadError as exc:
            raise EmotionUnavailable(str(exc)) from exc
        loaded = LoadedModel(model, order, device, path, revision, normalize, source, threading.Lock())
        _CACHE[key] = loaded
        return loaded


def windows(n_samples: int, window_samples: int) -> list[tuple[int, int]]:
    """Equal windows no longer than window_samples covering [0, n_samples)."""
    count = max(1, math.ceil(n_samples / window_samples))
    edges = np.linspace(0, n_samples, count + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def raw_scores(loaded: LoadedModel, clips: list[np.ndarray]) -> np.ndarray:
    """Raw model outputs (len(clips), 3) in the model's output order, batched by similar length."""
    import torch

    from .emotion_model import predict

    out = np.empty((len(clips), len(loaded.order)), dtype=np.float64)
    order = sorted(range(len(clips)), key=lambda i: clips[i].size)  # similar lengths pad least
    for b0 in range(0, len(order), BATCH_WINDOWS):
        rows = order[b0 : b0 + BATCH_WINDOWS]
        batch = [torch.from_numpy(_prepare(clips[i], loaded.normalize)) for i in rows]
        with loaded.lock:
            scores = predict(loaded.model, batch, loaded.device).numpy()
        out[rows] = scores
    if loaded.device == "cuda":
        # torch's caching allocator would keep this file's activations; CTranslate2, which shares the GPU
        # and has its own allocator, could not use them, so the cache is handed back after every file.
        with loaded.lock:
            torch.cuda.empty_cache()
    return out


def _prepare(clip: np.ndarray, normalize: bool) -> np.ndarray:
    x = np.asarray(clip, dtype=np.float32)
    if normalize:
        # The feature extractor's formula: per input, over its own samples (padding excluded).
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return x.astype(np.float32)


def score_segments(
    audio: AudioInput, spans: list[tuple[float, float]], settings: Settings
) -> tuple[list[dict[str, Any]], list[list[str]], dict[str, Any]]:
    """Emotion per span: (values, errors per span, meta). Raises EmotionUnavailable.

    ``audio`` is an array or a WavReader; each window's samples are read when its group is scored, so
    memory holds at most ``GROUP_WINDOWS`` windows of audio whatever the file's length.
    """
    source = as_source(audio)
    loaded = load_emotion_model(settings)
    window_samples = int(WINDOW_S * SAMPLE_RATE)
    parts: list[tuple[int, int]] = []
    owners: list[int] = []
    errors: list[list[str]] = [[] for _ in spans]
    for i, (start, end) in enumerate(spans):
        a = max(0, int(round(start * SAMPLE_RATE)))
        b = min(source.n_samples, int(round(end * SAMPLE_RATE)))
        if (b - a) < MIN_SEGMENT_S * SAMPLE_RATE:
            errors[i].append(
                f"emotion: segment has {max(b - a, 0) / SAMPLE_RATE:.2f} s of audio, "
                f"at least {MIN_SEGMENT_S} s needed"
            )
            continue
        for wa, wb in windows(b - a, window_samples):
            parts.append((a + wa, a + wb))
            owners.append(i)
    scores = np.empty((len(parts), len(loaded.order)))
    for g0 in range(0, len(parts), GROUP_WINDOWS):
        group = parts[g0 : g0 + GROUP_WINDOWS]
        scores[g0 : g0 + len(group)] = raw_scores(loaded, [source.samples(a, b) for a, b in group])
    weights = np.array([b - a for a, b in parts], dtype=np.float64)
    owners_arr = np.array(owners, dtype=np.int64)
    # Too-short spans still get an object (the feature ran), with null values and the reason in errors.
    results: list[dict[str, Any]] = [
        {"arousal": None, "valence": None, "dominance": None, "model": settings.emotion_model} for _ in spans
    ]
    for i in set(owners):
        pick = owners_arr == i
        pooled = np.average(scores[pick], axis=0, weights=weights[pick])
        values = dict(zip(loaded.order, np.clip(pooled, 0.0, 1.0).tolist(), strict=True))
        results[i] = {
            "arousal": round(values["arousal"], 4),
            "valence": round(values["valence"], 4),
            "dominance": round(values["dominance"], 4),
            "model": settings.emotion_model,
        }
    meta = {
        "model": settings.emotion_model,
        "path": str(loaded.path),
        "revision": loaded.revision,
        "device": loaded.device,
        "licence": licence(settings.emotion_model),
        "outputs": "raw scores averaged over windows, then clipped to 0..1",
        "window_s": WINDOW_S,
        "min_segment_s": MIN_SEGMENT_S,
        "normalisation": loaded.normalize_source,
    }
    return results, errors, meta
