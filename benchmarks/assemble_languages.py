"""Code-switched recordings of known languages assembled from real single-language clips in ../shared/data,
to score per-chunk language detection where no annotated code-switched recording exists here.
Deterministic: anyone with the same data rebuilds the same files.

Every part is one whole clip with its human (or agreed) reference: English (jfk, LJSpeech, LibriVox),
German (the four Berlin EmoDB clips), Russian (DeepSpeech's ru.wav) and Mandarin (the 1-second
chinese.flac). Each clip is normalised to 16 kHz mono and followed by `pause_s` of silence; a part's
`start`/`end` are the clip's own extent in the joined file (its leading and trailing silence included).

German, Russian and Chinese material is scarce (about 7 s, 6 s and 1 s), so the non-English layouts reuse
clips; the layouts are chosen to show the cases that matter, not to be a corpus:

  en-de        English, then German: file detection sees English first
  de-en        German, then English: file detection sees German first
  alternating  en, de, en, ru, en, zh, en: short switches inside one VAD chunk
  alternating-gaps  the same parts with 2.5 s pauses, so that VAD cuts at every switch
  non-en       de, de, ru, zh, de, de: no English at all
  en-only      English only: the control, where chunk detection must cost no accuracy

    python benchmarks/assemble_languages.py OUT_DIR [--layouts en-de alternating ...]

writes `<layout>.wav` and its manifest `<layout>.parts.json` (`{file, duration, pause_s, parts: [{language,
start, end, text, source}]}`) per layout.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from assemble import RATE, samples, write_wav  # noqa: E402

LJ = "en_read/ljspeech"
LIBRI = "en_read/librivox_sense_and_sensibility/sense_and_sensibility_01_austen_64kb-"
EMODB = "emotion/emodb_de"

# Each layout: (pause between parts in seconds, clips in order). Clip keys are paths under DATA.
LAYOUTS: dict[str, tuple[float, list[str]]] = {
    "en-de": (
        0.8,
        ["en_read/jfk/jfk.flac", f"{LJ}/LJ001-0005.wav"]
        + [f"{EMODB}/{c}.wav" for c in ("03a01Nc", "03a02Ta", "03a01Fa", "03a01Wa")],
    ),
    "de-en": (
        0.8,
        [f"{EMODB}/{c}.wav" for c in ("03a01Nc", "03a02Ta", "03a01Fa", "03a01Wa")]
        + ["en_read/jfk/jfk.flac", f"{LJ}/LJ001-0005.wav"],
    ),
    "alternating": (
        0.8,
        [
            f"{LJ}/LJ001-0001.wav",
            f"{EMODB}/03a02Ta.wav",
            f"{LIBRI}0870.wav",
            "multilingual/ru/ru.wav",
            f"{LJ}/LJ001-0003.wav",
            "multilingual/zh/chinese.flac",
            "en_read/jfk/jfk.flac",
        ],
    ),
    "non-en": (
        0.8,
        [
            f"{EMODB}/03a01Fa.wav",
            f"{EMODB}/03a02Ta.wav",
            "multilingual/ru/ru.wav",
            "multilingual/zh/chinese.flac",
            f"{EMODB}/03a01Wa.wav",
            f"{EMODB}/03a01Nc.wav",
        ],
    ),
    "en-only": (
        0.8,
        ["en_read/jfk/jfk.flac"] + [f"{LJ}/LJ001-000{i}.wav" for i in (1, 2, 3, 4, 5)] + [f"{LIBRI}0870.wav"],
    ),
}
LAYOUTS["alternating-gaps"] = (2.5, LAYOUTS["alternating"][1])


def references(data: Path = DATA) -> dict[str, tuple[str, str]]:
    """Clip key -> (language, reference text), for every clip a layout may use."""
    refs: dict[str, tuple[str, str]] = {
        "en_read/jfk/jfk.flac": ("en", (data / "en_read/jfk/jfk.txt").read_text(encoding="utf-8").strip())
    }
    for line in (data / LJ / "transcripts.psv").read_text(encoding="utf-8").splitlines():
        if "|" in line:
            key, text = line.split("|", 1)
            refs[f"{LJ}/{key}.wav"] = ("en", text.strip())
    for wav in sorted((data / LIBRI).parent.glob("*.wav")):
        key = str(wav.relative_to(data))
        refs[key] = ("en", wav.with_suffix(".txt").read_text(encoding="utf-8").strip())
    with open(data / EMODB / "labels.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            refs[f"{EMODB}/{row['file']}"] = ("de", row["transcription_de"].strip())
    with open(data / "multilingual/ru/ru.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            refs[f"multilingual/ru/{row['wav_filename']}"] = ("ru", row["transcript"].strip())
    zh = (data / "multilingual/zh/chinese.txt").read_text(encoding="utf-8").strip()
    refs["multilingual/zh/chinese.flac"] = ("zh", zh)
    return refs


def build(layout: str, out: Path, data: Path = DATA) -> tuple[Path, dict[str, object]]:
    """Write `<layout>.wav` and `<layout>.parts.json` into `out`; return the WAV and the manifest."""
    pause_s, clips = LAYOUTS[layout]
    refs = references(data)
    pause = np.zeros(int(round(pause_s * RATE)), dtype=np.float32)
    pieces: list[np.ndarray] = []
    parts: list[dict[str, object]] = []
    t = 0
    with tempfile.TemporaryDirectory(prefix="langs-") as tmp:
        for i, key in enumerate(clips):
            x = samples(data / key, Path(tmp))
            language, text = refs[key]
            start, t = t, t + x.size
            parts.append(
                {
                    "language": language,
                    "start": round(start / RATE, 3),
                    "end": round(t / RATE, 3),
                    "text": text,
                    "source": key,
                }
            )
            pieces.append(x)
            if i < len(clips) - 1:
                pieces.append(pause)
                t += pause.size
    wav = out / f"{layout}.wav"
    duration = write_wav(wav, pieces)
    manifest: dict[str, object] = {
        "file": wav.name,
        "duration": round(duration, 3),
        "pause_s": pause_s,
        "parts": parts,
    }
    wav.with_suffix(".parts.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return wav, manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for layout in args.layouts:
        wav, manifest = build(layout, args.out)
        langs = " ".join(str(p["language"]) for p in manifest["parts"])  # type: ignore[union-attr]
        print(f"{wav}  {manifest['duration']:.1f} s  {langs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
