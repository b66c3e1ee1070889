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


def load(model: str, token: str | None, device: str) -> Any:
    local = Path(model).expanduser()
    try:
        from pyannote.audio import Pipeline
    except ImportError:
        raise PyannoteUnavailable(
            f"DIARIZATION_MODEL={model!r} needs pyannote.audio: install the extra "
            "(pip install 'slower-whisper[pyannote]'), or unset DIARIZATION_MODEL for the embedded diarizer"
        ) from None
    if not local.exists() and not token:
        raise PyannoteUnavailable(
            f"DIARIZATION_MODEL={model!r} is a gated Hugging Face pipeline: set HF_TOKEN (after accepting "
            "its terms on huggingface.co), or give a local pipeline folder"
        )
    try:
        pipeline = Pipeline.from_pretrained(str(local) if local.exists() else model, token=token)
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

    samples = audio.read() if isinstance(audio, WavReader) else np.asarray(audio, dtype=np.float32)
    kwargs = {"num_speakers": num, "min_speakers": low, "max_speakers": high}
    output = pipeline(
        {"waveform": torch.from_numpy(samples)[None], "sample_rate": SAMPLE_RATE},
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    annotation = getattr(output, "speaker_diarization", output)
    return [
        (str(label), float(seg.start), float(seg.end))
        for seg, _, label in annotation.itertracks(yield_label=True)
    ]
