"""pyannote.audio pipelines, when installed (the `pyannote` extra) and given `HF_TOKEN`: an option, never
required. Every missing piece is a start-up error (exit 2) that says what to install or set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transcription.audio import SAMPLE_RATE, WavReader
from transcription.errors import UsageError


class PyannoteUnavailable(UsageError, RuntimeError):
    """DIARIZATION_MODEL names a pyannote pipeline that cannot be used here."""


EXTRA_HINT = "pip install 'slower-whisper[pyannote]'"


def is_folder_name(model: str) -> bool:
    """A local pipeline folder rather than a hub id (`owner/name`, exactly one slash)."""
    return model.startswith(("/", ".", "~")) or model.count("/") != 1 or Path(model).expanduser().exists()


def check(model: str, token: str | None, installed: bool) -> None:
    """Everything missing for this pipeline, named at once with its fix (PyannoteUnavailable)."""
    local = Path(model).expanduser()
    if is_folder_name(model) and not local.is_dir():
        raise PyannoteUnavailable(
            f"DIARIZATION_MODEL={model!r}: no such pipeline folder here; give a pyannote pipeline folder or "
            "a hub id such as pyannote/speaker-diarization-community-1, or unset it for the embedded diarizer"
        )
    missing = []
    if not installed:
        missing.append(f"pyannote.audio is not installed ({EXTRA_HINT})")
    if not is_folder_name(model) and not token:
        missing.append("HF_TOKEN is not set (a token of an account that accepted the pipeline's terms)")
    if missing:
        raise PyannoteUnavailable(
            f"DIARIZATION_MODEL={model!r} cannot be used: "
            + "; ".join(missing)
            + ". Or unset DIARIZATION_MODEL for the embedded diarizer."
        )


def installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("pyannote.audio") is not None
    except ImportError:  # no `pyannote` namespace at all
        return False


def load(model: str, token: str | None, device: str) -> Any:
    check(model, token, installed())
    from pyannote.audio import Pipeline

    source = str(Path(model).expanduser()) if is_folder_name(model) else model
    try:
        pipeline = Pipeline.from_pretrained(source, token=token)
    except Exception as exc:  # noqa: BLE001 - network, auth or a bad folder: all mean "cannot start"
        raise PyannoteUnavailable(f"DIARIZATION_MODEL={model!r} could not be loaded: {exc}") from None
    if pipeline is None:
        raise PyannoteUnavailable(
            f"DIARIZATION_MODEL={model!r} could not be loaded (no access with HF_TOKEN?)"
        )
    if device == "cuda":
        import torch

        pipeline.to(torch.device("cuda"))
    return pipeline


def run(pipeline: Any, audio: WavReader | np.ndarray, num: int | None, low: int | None, high: int | None):
    """(speaker label, start, end) turns from a pyannote pipeline."""
    import torch

    kwargs = {"num_speakers": num, "min_speakers": low, "max_speakers": high}
    counts = {k: v for k, v in kwargs.items() if v is not None}
    if isinstance(audio, WavReader):  # the file itself: pyannote reads it chunk by chunk, never whole
        output = pipeline(str(audio.path), **counts)
    else:
        samples = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None]
        output = pipeline({"waveform": samples, "sample_rate": SAMPLE_RATE}, **counts)
    annotation = getattr(output, "speaker_diarization", output)
    return [
        (str(label), float(seg.start), float(seg.end))
        for seg, _, label in annotation.itertracks(yield_label=True)
    ]
