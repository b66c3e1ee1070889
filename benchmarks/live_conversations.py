"""Recordings for the live benchmark: conversations with turns whose speech times and words are known.

Assembled conversations (deterministic): read speech by the three English readers in ../shared/data
(LJSpeech's reader, John F. Kennedy, the LibriVox reader of Sense and Sensibility), 2 or 3 of them taking
turns. Each clip is cut to its speech (Silero VAD on the clip alone, 50 ms kept on each side); a turn is
one clip, or now and then two clips of the same reader 0.35 s apart; turns follow each other after a
silence drawn from 0.1-1.0 s, until the conversation is 48-78 s long (also drawn). The turn's reference is
its clips' transcripts and its speech runs from the first clip's speech start to the last one's end.

Real conversations: the Harper Valley bank calls (two people on one mixed phone line, 8 kHz), whose human
segments carry word offsets: a turn is one segment, from its first word's start to its last word's end,
with the transcript's `[noise]`-style tags removed. AMI openings have speaker turns but no words, so they
are not used here.

Every recording is 16 kHz mono int16 with 0.5 s of silence before the first turn and 4 s after the last.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16_000
LEAD_S, TRAIL_S = 0.5, 4.0
PAD_S = 0.05  # kept around each clip's speech
SAME_TURN_PAUSE_S = 0.35  # between two clips of one reader in one turn


@dataclass(frozen=True)
class RefTurn:
    start_s: float  # first word starts
    end_s: float  # last word ends
    text: str
    speaker: str


@dataclass(frozen=True)
class Recording:
    name: str
    audio: np.ndarray  # int16, RATE
    turns: tuple[RefTurn, ...]

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / RATE

    @property
    def reference(self) -> str:
        return " ".join(t.text for t in self.turns)


def decode(path: Path, rate: int = RATE) -> np.ndarray:
    import av  # PyAV, as the service decodes

    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype("<i2")


def speech_cut(audio: np.ndarray) -> np.ndarray:
    """The clip from its first speech to its last (Silero), PAD_S kept on each side."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(audio.astype(np.float32) / 32768.0, vad_options=VadOptions(speech_pad_ms=0))
    if not spans:
        raise ValueError("no speech found in a clip")
    pad = int(PAD_S * RATE)
    return audio[max(0, spans[0]["start"] - pad) : spans[-1]["end"] + pad]


def readers(data: Path) -> dict[str, list[tuple[Path, str]]]:
    read = data / "en_read"
    lj = []
    for line in (read / "ljspeech" / "transcripts.psv").read_text(encoding="utf-8").splitlines():
        if "|" in line:
            key, text = line.split("|", 1)
            lj.append((read / "ljspeech" / f"{key}.wav", text.strip()))
    libri = [
        (wav, wav.with_suffix(".txt").read_text(encoding="utf-8").strip())
        for wav in sorted((read / "librivox_sense_and_sensibility").glob("*.wav"))
    ]
    jfk = [(read / "jfk" / "jfk.flac", (read / "jfk" / "jfk.txt").read_text(encoding="utf-8").strip())]
    return {"lj": lj, "jfk": jfk, "libri": libri}


class _Builder:
    """Appends silence and speech, remembering where each turn's speech lies."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = [np.zeros(int(LEAD_S * RATE), dtype="<i2")]
        self.length = self.parts[0].shape[0]
        self.turns: list[RefTurn] = []

    def add(self, audio: np.ndarray) -> tuple[float, float]:
        start = self.length / RATE
        self.parts.append(audio)
        self.length += audio.shape[0]
        return start, self.length / RATE

    def silence(self, seconds: float) -> None:
        self.add(np.zeros(int(seconds * RATE), dtype="<i2"))

    def recording(self, name: str) -> Recording:
        self.silence(TRAIL_S)
        return Recording(name, np.concatenate(self.parts), tuple(self.turns))


def assembled(data: Path, count: int = 8) -> list[Recording]:
    pool = readers(data)
    cut = {p: speech_cut(decode(p)) for clips in pool.values() for p, _ in clips}
    names = list(pool)
    out = []
    for n in range(count):
        rng = random.Random(1000 + n)
        people = names if n % 2 else [names[(n // 2) % 3], names[(n // 2 + 1) % 3]]
        cursor = {who: rng.randrange(len(pool[who])) for who in people}
        length = rng.uniform(48, 78)
        b, who = _Builder(), rng.choice(people)
        while True:
            mine = pool[who]
            clips = [mine[(cursor[who] + i) % len(mine)] for i in range(2 if rng.random() < 0.25 else 1)]
            pauses = SAME_TURN_PAUSE_S * (len(clips) - 1)
            turn_s = sum(cut[path].shape[0] for path, _ in clips) / RATE + pauses
            if len(b.turns) >= 3 and b.length / RATE + turn_s + TRAIL_S > length:
                break
            cursor[who] += len(clips)
            start = None
            for i, (path, _) in enumerate(clips):
                if i:
                    b.silence(SAME_TURN_PAUSE_S - 2 * PAD_S)
                s, end = b.add(cut[path])
                start = s + PAD_S if start is None else start
            b.turns.append(RefTurn(start, end - PAD_S, " ".join(text for _, text in clips), who))
            b.silence(max(0.0, rng.uniform(0.1, 1.0) - 2 * PAD_S))
            who = rng.choice([p for p in people if p != who])
        out.append(b.recording(f"read-{n}-{len(people)}sp"))
    return out


_TAG = re.compile(r"\[[^\]]*\]|<[^>]*>")


def harper_valley(data: Path, ids: list[str]) -> list[Recording]:
    folder = data / "conversations" / "harper_valley"
    out = []
    for call in ids:
        audio = decode(folder / f"{call}.wav")
        turns = []
        for seg in json.loads((folder / f"{call}.transcript.json").read_text(encoding="utf-8")):
            text = " ".join(_TAG.sub(" ", seg["human_transcript"]).split())
            if not text or not seg["word_offsets_ms"]:
                continue
            start = (seg["start_ms"] + seg["word_offsets_ms"][0]) / 1000
            end = (seg["start_ms"] + seg["word_offsets_ms"][-1] + seg["word_durations_ms"][-1]) / 1000
            turns.append(RefTurn(start, end, text, seg["speaker_role"]))
        turns.sort(key=lambda t: t.start_s)
        lead = np.zeros(int(LEAD_S * RATE), dtype="<i2")
        tail = np.zeros(int(TRAIL_S * RATE), dtype="<i2")
        shifted = tuple(RefTurn(t.start_s + LEAD_S, t.end_s + LEAD_S, t.text, t.speaker) for t in turns)
        out.append(Recording(f"harper-{call[:8]}", np.concatenate([lead, audio, tail]), shifted))
    return out
