"""Conversations of known speakers assembled from real single-speaker clips in ../shared/data, to score
diarization where no annotated conversation of 3-5 speakers exists here. Deterministic: anyone with the
same data rebuilds the same files.

Speakers, in this order: LJSpeech's reader (female, LJ001-0001..0016), John F. Kennedy (male, jfk.flac), the
LibriVox reader of Sense and Sensibility (5 clips), the Berlin EmoDB speaker (male, German, 4 acted clips),
the DeepSpeech Russian speaker (ru.wav). A conversation of N speakers takes the first N and cycles through
them for `rounds` rounds; each turn is that speaker's next clip (cycling when they have fewer), normalised to
16 kHz mono, followed by `pause_s` of silence. The clips carry no turn annotations, so the reference turns
are each clip's speech regions (Silero VAD on the clip alone) under its speaker.

`narrowband=True` passes the conversation through a telephone channel (300-3400 Hz band, 8 kHz mu-law,
ffmpeg) and back to 16 kHz: the same turns, heard as on a call.

    python benchmarks/assemble.py OUT_DIR [--speakers 2 3 4 5] [--narrowband]

writes `conversation-N.wav` (and `conversation-N-nb.wav`) with the reference `.rttm` beside each, per N.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from transcription.audio import WavReader, normalize  # noqa: E402
from transcription.diarize.speech import speech_regions  # noqa: E402

RATE = 16000
Turns = list[tuple[str, float, float]]


def speakers(data: Path = DATA) -> dict[str, list[Path]]:
    return {
        "lj": sorted((data / "en_read/ljspeech").glob("LJ001-00*.wav")),
        "jfk": [data / "en_read/jfk/jfk.flac"],
        "libri": sorted((data / "en_read/librivox_sense_and_sensibility").glob("*.wav")),
        "emodb": sorted((data / "emotion/emodb_de").glob("*.wav")),
        "ru": [data / "multilingual/ru/ru.wav"],
    }


def samples(path: Path, tmp: Path) -> np.ndarray:
    """The clip as 16 kHz mono float32 (normalised once into `tmp`)."""
    out = tmp / f"{path.stem}.norm.wav"
    if not out.exists():
        normalize(path, out)
    return WavReader(out).read()


def write_wav(path: Path, pieces: Iterator[np.ndarray] | list[np.ndarray]) -> float:
    """16-bit mono WAV written piece by piece; returns its duration in seconds."""
    frames = 0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for piece in pieces:
            w.writeframes((np.clip(piece, -1, 1) * 32767).astype("<i2").tobytes())
            frames += piece.size
    return frames / RATE


def write_rttm(turns: Turns, path: Path) -> None:
    uri = path.stem
    lines = [f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {s} <NA> <NA>" for s, a, b in turns]
    path.write_text("\n".join(lines) + "\n")


def conversation(
    n: int, tmp: Path, rounds: int = 3, pause_s: float = 0.5, narrowband: bool = False, data: Path = DATA
) -> tuple[Path, Turns]:
    """The N-speaker conversation as a WAV in `tmp` and its reference turns."""
    names = list(speakers(data))[:n]
    clips = speakers(data)
    pause = np.zeros(int(pause_s * RATE), dtype=np.float32)
    pieces, turns, t = [], [], 0.0
    for r in range(rounds):
        for name in names:
            x = samples(clips[name][r % len(clips[name])], tmp)
            turns += [(name, t + a, t + b) for a, b in speech_regions(x)]
            pieces += [x, pause]
            t += (x.size + pause.size) / RATE
    out = tmp / f"conversation-{n}.wav"
    write_wav(out, pieces)
    if narrowband:
        out = telephone(out)
    return out, turns


def telephone(wav: Path) -> Path:
    """`wav` as heard through a telephone channel, back at 16 kHz mono: `<stem>-nb.wav` beside it."""
    phone = wav.with_name(wav.stem + "-8k.wav")
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-af", "highpass=f=300,lowpass=f=3400"]
        + ["-ar", "8000", "-c:a", "pcm_mulaw", str(phone)],
        check=True,
    )
    out = wav.with_name(wav.stem + "-nb.wav")
    normalize(phone, out)
    phone.unlink()
    return out


def long_recording(minutes: float, tmp: Path, n: int = 5, data: Path = DATA) -> tuple[Path, int]:
    """About `minutes` of the N-speaker turn-taking, written as it is made (never whole in memory): the
    speakers' clips in turn, round after round, with pauses varied from 0.3 to 0.9 s (seeded) so that no
    stretch repeats another exactly. Returns the WAV and the number of speakers in it."""
    names = list(speakers(data))[:n]
    clips = speakers(data)
    cache = {p: samples(p, tmp) for name in names for p in clips[name]}
    rng = np.random.default_rng(12)
    target = minutes * 60 * RATE

    def pieces() -> Iterator[np.ndarray]:
        written, r = 0, 0
        while written < target:
            for name in names:
                x = cache[clips[name][r % len(clips[name])]]
                pause = np.zeros(int(rng.uniform(0.3, 0.9) * RATE), dtype=np.float32)
                yield x
                yield pause
                written += x.size + pause.size
            r += 1

    out = tmp / "long.wav"
    write_wav(out, pieces())
    return out, len(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--speakers", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--narrowband", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for n in args.speakers:
        wav, turns = conversation(n, args.out, narrowband=args.narrowband)
        for out in {args.out / f"conversation-{n}.wav", wav}:  # the telephone copy has the same turns
            write_rttm(turns, out.with_suffix(".rttm"))
            print(out, f"{len(turns)} reference turns")
    for clip in args.out.glob("*.norm.wav"):
        clip.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
