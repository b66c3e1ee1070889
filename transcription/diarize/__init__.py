"""Who spoke when: the embedded offline diarizer, per-channel speakers of stereo calls, and pyannote.

The embedded diarizer needs no token and no network: Silero VAD finds speech (`speech.py`), a d-vector
encoder whose weights ship in a PyPI wheel embeds 1.6 s windows every WINDOW_HOP_S (`embedding.py`), the
windows are grouped by voice, the count found by merging over-clustered groups of one voice (`cluster.py`),
and runs of one label become turns. A two-channel source with one party per channel skips all that
(`stereo.py`). `DIARIZATION_MODEL` may name a pyannote pipeline instead (`pyannote_backend.py`). See
docs/speakers.md for the figures.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transcription import hardware
from transcription.audio import SAMPLE_RATE, WavReader
from transcription.speakers import first_appearance

from . import cluster, speech, stereo
from .embedding import HOP, WINDOW_FRAMES, EmbeddingModelMissing, VoiceEncoder
from .pyannote_backend import PyannoteUnavailable

if TYPE_CHECKING:
    from transcription.config import Settings

__all__ = [
    "Constraints",
    "Diarization",
    "DiarizationError",
    "Diarizer",
    "EmbeddingModelMissing",
    "PyannoteUnavailable",
    "Turn",
    "load",
    "name_speakers",
]

WINDOW_S = WINDOW_FRAMES * HOP / SAMPLE_RATE  # 1.6 s
WINDOW_HOP_S = 0.5
KNOWN_MATCH = 0.75  # a reference names a speaker only when their voices are at least this similar
MAX_REGION_READ_S = 300.0
EMBED_BATCH = 256  # windows embedded at a time (about 26 MB of audio)
MIN_JUDGED_SPEECH_S = 3.0  # less speech than this (under two windows' worth) cannot be told apart by voice


class DiarizationError(RuntimeError):
    """Diarization failed on this audio (the transcript is kept; speakers are not made up)."""


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float


@dataclass(frozen=True)
class Constraints:
    num: int | None = None
    min: int | None = None
    max: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Constraints:
        return cls(settings.num_speakers, settings.min_speakers, settings.max_speakers)


@dataclass
class Diarization:
    turns: list[Turn]
    method: str
    warnings: list[str] = field(default_factory=list)
    centroids: dict[str, np.ndarray] = field(default_factory=dict)

    def speakers(self) -> list[str]:
        return first_appearance(t.speaker for t in sorted(self.turns, key=lambda t: t.start))


class Diarizer:
    """The embedded diarizer (or a pyannote pipeline): loaded once, safe to call from several threads."""

    def __init__(self, name: str, encoder: VoiceEncoder, pipeline: Any = None) -> None:
        self.name = name
        self.encoder = encoder
        self.pipeline = pipeline
        self._pipeline_lock = threading.Lock()

    def embed(self, clip: np.ndarray) -> np.ndarray:
        return self.encoder.embed(clip)

    def diarize(
        self, audio: WavReader | np.ndarray, constraints: Constraints, *, source: Path | None = None
    ) -> Diarization:
        try:
            if self.pipeline is not None:
                return self._pyannote(audio, constraints)
            c = constraints
            two_allowed = c.num in (None, 2) and (c.min or 1) <= 2 <= (c.max or 2)
            if source is not None and two_allowed:
                found = self._stereo(audio, source)
                if found is not None:
                    return found
            return self._embedded(audio, constraints)
        except (DiarizationError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a diarizer bug fails this file clearly, never silently
            raise DiarizationError(f"{type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------ the three ways

    def _embedded(self, audio: WavReader | np.ndarray, c: Constraints) -> Diarization:
        regions = speech.speech_regions(audio)
        if not regions:
            return Diarization([], "embedded", ["no speech found: no speakers"])
        centres, vectors, whole = self._embed_windows(audio, regions)
        warnings: list[str] = []
        speech_s = sum(e - s for s, e in regions)
        estimated = c.num is None and (c.min or 1) <= 1
        if estimated and speech_s < MIN_JUDGED_SPEECH_S:
            # Too few windows to tell voices apart: one speaker, said so, rather than a guess.
            labels = np.zeros(len(centres), dtype=int)
            centroids = cluster.centroids(vectors, labels)
            warnings.append(
                f"only {speech_s:.1f} s of speech: too little to count speakers, all of it given to one"
            )
        else:
            labels, centroids = cluster.cluster(vectors, c.num, c.min, c.max, reliable=np.array(whole))
        turns = _turns(regions, centres, labels)
        names = _first_appearance_names(turns)
        out = [Turn(names[lab], s, e) for lab, s, e in turns]
        by_name = {names[lab]: centroids[lab] for lab in names}
        warnings += _fewer_than_asked(len(names), c)
        return Diarization(out, "embedded", warnings, by_name)

    def _embed_windows(
        self, audio: WavReader | np.ndarray, regions: list[tuple[float, float]]
    ) -> tuple[list[float], np.ndarray, list[bool]]:
        """Window centres, their embeddings, and whether each lies wholly inside speech. Embedded batch by
        batch as the audio is read, so only vectors are kept: memory stays flat on a long recording."""
        centres: list[float] = []
        whole: list[bool] = []
        vectors: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        for centre, inside, clip in _windows(audio, regions):
            centres.append(centre)
            whole.append(inside)
            batch.append(clip)
            if len(batch) == EMBED_BATCH:
                vectors.append(self.encoder.embed_windows(batch))
                batch = []
        vectors.append(self.encoder.embed_windows(batch))
        return centres, np.concatenate(vectors), whole

    def _stereo(self, audio: WavReader | np.ndarray, source: Path) -> Diarization | None:
        levels = stereo.channel_levels(source)
        found = stereo.per_channel_turns(levels) if levels is not None else None
        if not found:
            return None
        names = _first_appearance_names(found)
        turns = [Turn(names[ch], s, e) for ch, s, e in found]
        centroids = {}
        for ch, name in names.items():
            spans = [(s, e) for c, s, e in found if c == ch][:20]
            clips = [_read(audio, s, min(e, s + WINDOW_S)) for s, e in spans]
            if clips:
                mean = self.encoder.embed_windows(clips).mean(axis=0)
                centroids[name] = mean / max(float(np.linalg.norm(mean)), 1e-9)
        return Diarization(turns, "stereo", [], centroids)

    def _pyannote(self, audio: WavReader | np.ndarray, c: Constraints) -> Diarization:
        from . import pyannote_backend

        with self._pipeline_lock:
            raw = pyannote_backend.run(self.pipeline, audio, c.num, c.min, c.max)
        raw.sort(key=lambda t: (t[1], t[2]))
        names = _first_appearance_names(raw)
        turns = [Turn(names[lab], s, e) for lab, s, e in raw]
        warnings = [] if turns else ["no speech found: no speakers"]
        return Diarization(turns, "pyannote", warnings, {})


def _fewer_than_asked(found: int, c: Constraints) -> list[str]:
    asked = c.num if c.num is not None else c.min
    if asked is None or found >= asked:
        return []
    what = f"{asked} speakers" if c.num is not None else f"at least {asked} speakers"
    return [f"{what} asked for, but only {found} distinct voices were found in the speech"]


def _windows(
    audio: WavReader | np.ndarray, regions: list[tuple[float, float]]
) -> Iterator[tuple[float, bool, np.ndarray]]:
    """(centre, wholly inside speech, 1.6 s clip) every WINDOW_HOP_S through each speech region. A region
    shorter than a window (a backchannel, a short answer) gets one window at its centre made of the region's
    own audio repeated: the audio around it is silence or, in a fast exchange, the other party. Audio is read
    a region (at most MAX_REGION_READ_S) at a time."""
    half = WINDOW_S / 2
    step = int(MAX_REGION_READ_S / WINDOW_HOP_S)
    length = int(WINDOW_S * SAMPLE_RATE)
    for start, end in regions:
        inside = end - start >= WINDOW_S
        if not inside:
            burst = _read(audio, start, end)
            if burst.size:
                yield (start + end) / 2, False, np.tile(burst, -(-length // burst.size))[:length]
            continue
        points = window_centres(start, end)
        for i in range(0, len(points), step):
            part = points[i : i + step]
            lo = max(0.0, part[0] - half)
            block = _read(audio, lo, part[-1] + half)
            for p in part:
                first = max(0, int(round((p - half - lo) * SAMPLE_RATE)))
                yield p, inside, block[first : first + length]


def window_centres(start: float, end: float) -> list[float]:
    """Centres of the embedding windows over one speech region: every WINDOW_HOP_S, the last one flush with
    the region's end; one in the middle of a region shorter than a window."""
    half = WINDOW_S / 2
    if end - start < WINDOW_S:
        return [(start + end) / 2]
    points = [float(p) for p in np.arange(start + half, end - half + 1e-6, WINDOW_HOP_S)]
    if end - half - points[-1] > WINDOW_HOP_S / 2:
        points.append(end - half)
    return points


def _read(audio: WavReader | np.ndarray, start: float, end: float) -> np.ndarray:
    if isinstance(audio, WavReader):
        return audio.read(start, end)
    return np.asarray(audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], dtype=np.float32)


def _turns(
    regions: list[tuple[float, float]], centres: list[float], labels: np.ndarray
) -> list[tuple[int, float, float]]:
    """Runs of one label within each speech region; a label change lies halfway between window centres.
    A lone window between two of the same other label is taken as that label (too short to trust)."""
    labels = labels.copy()
    for i in range(1, len(labels) - 1):
        same_region = _region_of(regions, centres[i - 1]) == _region_of(regions, centres[i + 1])
        if labels[i - 1] == labels[i + 1] != labels[i] and same_region:
            labels[i] = labels[i - 1]
    out: list[tuple[int, float, float]] = []
    k = 0
    for start, end in regions:
        members = []
        while k < len(centres) and centres[k] <= end + 1e-6:
            if centres[k] >= start - 1e-6:
                members.append(k)
            k += 1
        if not members:
            continue
        run_start, run_label = start, int(labels[members[0]])
        for a, b in zip(members, members[1:], strict=False):
            if labels[b] != run_label:
                cut = (centres[a] + centres[b]) / 2
                out.append((run_label, run_start, cut))
                run_start, run_label = cut, int(labels[b])
        out.append((run_label, run_start, end))
    return out


def _region_of(regions: list[tuple[float, float]], t: float) -> int:
    for i, (s, e) in enumerate(regions):
        if s - 1e-6 <= t <= e + 1e-6:
            return i
    return -1


def _first_appearance_names(turns: list[tuple[Any, float, float]]) -> dict[Any, str]:
    """SPEAKER_00, SPEAKER_01, ... for the labels in the order they are first heard."""
    order = first_appearance(label for label, _, _ in sorted(turns, key=lambda t: (t[1], t[2])))
    return {label: f"SPEAKER_{i:02d}" for i, label in enumerate(order)}


def name_speakers(result: Diarization, references: dict[str, np.ndarray], diarizer: Diarizer) -> Diarization:
    """Speakers renamed after the references their voices match (one to one, best matches first); a speaker
    no reference matches keeps its SPEAKER_nn id."""
    if not references or not result.centroids:
        return result
    from scipy.optimize import linear_sum_assignment

    names = list(references)
    refs = np.stack([diarizer.embed(references[n]) for n in names])
    speakers = list(result.centroids)
    sims = refs @ np.stack([result.centroids[s] for s in speakers]).T
    rows, cols = linear_sum_assignment(-sims)
    rename = {speakers[c]: names[r] for r, c in zip(rows, cols, strict=True) if sims[r, c] >= KNOWN_MATCH}
    turns = [Turn(rename.get(t.speaker, t.speaker), t.start, t.end) for t in result.turns]
    centroids = {rename.get(k, k): v for k, v in result.centroids.items()}
    return Diarization(turns, result.method, list(result.warnings), centroids)


def load(settings: Settings) -> Diarizer:
    """The diarizer for these settings, loaded once per process."""
    return _load(settings.diarization_model, settings.hf_token, hardware.torch_device(settings.device))


@functools.cache
def _load(model: str | None, token: str | None, torch_device: str) -> Diarizer:
    if model:
        from . import pyannote_backend

        pipeline = pyannote_backend.load(model, token, torch_device)
        return Diarizer(model, VoiceEncoder(torch_device), pipeline)
    return Diarizer("embedded:resemblyzer-dvector", VoiceEncoder(torch_device))
