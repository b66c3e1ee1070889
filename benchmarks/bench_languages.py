"""Languages within one recording: per-chunk detection against detect-once, on code-switched real speech.

The recordings come from `assemble_languages.py` (whole clips of known language and text, joined by short
pauses). In one run, on the same machine, with the same model files and decoding settings (beam 5, Silero
VAD, word timestamps, CPU int8):

  bare   faster-whisper `WhisperModel.transcribe(language=None)`: the language detected once, from the
         first 30 s of speech, as users get it elsewhere
  alone  each part cut out and transcribed by itself in its known language: the WER a part can reach
         (plus `detect_language` on the part alone: whether the model can tell its language at all)
  chunk  `slower-whisper transcribe` with `WHISPER_LANGUAGE_DETECTION=chunk` (the default)
  file   `slower-whisper transcribe` with `WHISPER_LANGUAGE_DETECTION=file` (the old behaviour)

Every output word is given to the part nearest to a point just before the word's end (see `assign`); a
part's languages are its words' segment languages. English, German and Russian are scored by word error
rate (lower case, no punctuation), Chinese by character error rate on CJK characters. The CLI runs are
timed as whole processes (model load included) and by their own `meta.timings.transcribe`, so the cost of
chunk detection over file detection reads as a ratio.

    python benchmarks/bench_languages.py [--quick] [--repeats 1] [--model base]
        [--out benchmarks/results/languages.json] [--markdown FILE] [--work DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from assemble_languages import LAYOUTS, build  # noqa: E402
from bench_throughput import normalize  # noqa: E402
from common import server_env  # noqa: E402

QUICK = ["en-de", "alternating"]
CONTROL = "en-only"
DECODE = {"beam_size": 5, "vad_filter": True, "word_timestamps": True}
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
Word = dict[str, Any]  # {start, end, word, language}


# ---------------------------------------------------------------- scoring


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over tokens (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def tokens(text: str, language: str) -> list[str]:
    """Scoring units: CJK characters for Chinese, normalised words otherwise (ё read as е)."""
    if language == "zh":
        return CJK.findall(text)
    return normalize(text.replace("ё", "е").replace("Ё", "Е")).split()


def errors(ref: str, hyp: str, language: str) -> tuple[int, int]:
    """(edit errors, reference length) of `hyp` against `ref`, in `language`'s units."""
    r, h = tokens(ref, language), tokens(hyp, language)
    return edit_distance(r, h), len(r)


def assign(words: list[Word], parts: list[dict[str, Any]]) -> list[list[Word]]:
    """The words falling in each part: the part nearest to the word's anchor (inside counts as 0).

    The anchor is just before the word's end, not its midpoint: Whisper starts the first word after a pause
    where the previous word ended, so a word's start (and midpoint) can lie in the part before it."""
    out: list[list[Word]] = [[] for _ in parts]
    for w in words:
        at = w["end"] - min(0.15, (w["end"] - w["start"]) / 2)
        dist = [max(p["start"] - at, 0.0, at - p["end"]) for p in parts]
        out[dist.index(min(dist))].append(w)
    return out


def score(words: list[Word], parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per part: the hypothesis text, its languages (share of words), and its errors."""
    rows = []
    for part, ws in zip(parts, assign(words, parts), strict=True):
        hyp = "".join(w["word"] for w in ws).strip()
        err, n = errors(part["text"], hyp, part["language"])
        langs = Counter(w["language"] for w in ws)
        rows.append(
            {
                "language": part["language"],
                "assigned": {k: round(v / len(ws), 2) for k, v in langs.most_common()} if ws else {},
                "majority": langs.most_common(1)[0][0] if ws else None,
                "errors": err,
                "ref_units": n,
                "er": round(err / n, 4),
                "hyp": hyp,
            }
        )
    return rows


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Error rate per reference language (errors over units, pooled) and the share of parts whose majority
    language is right."""
    out: dict[str, Any] = {}
    for lang in sorted({r["language"] for r in rows}):
        rs = [r for r in rows if r["language"] == lang]
        out[lang] = round(sum(r["errors"] for r in rs) / max(1, sum(r["ref_units"] for r in rs)), 4)
    out["language_right"] = f"{sum(r['majority'] == r['language'] for r in rows)}/{len(rows)}"
    return out


# ---------------------------------------------------------------- systems


def model_path(name: str) -> str:
    from transcription import config, models

    return str(models.resolve(name, config.Settings(), allow_download=False))


def bare(files: dict[str, dict[str, Any]], audio: dict[str, Any], path: str) -> dict[str, Any]:
    """Plain faster-whisper with the language detected once per file; and every part alone."""
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(path, device="cpu", compute_type="int8")
    load_s = time.perf_counter() - t0
    result: dict[str, Any] = {"load_s": round(load_s, 2), "files": {}, "alone": {}}
    for stem, manifest in files.items():
        t0 = time.perf_counter()
        segments, info = model.transcribe(audio[stem], language=None, **DECODE)
        words = [
            {"start": w.start, "end": w.end, "word": w.word, "language": info.language}
            for s in segments
            for w in s.words or []
        ]
        result["files"][stem] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "language": info.language,
            "language_probability": round(info.language_probability, 3),
            "words": words,
        }
        print(f"bare {stem}: {info.language} in {result['files'][stem]['seconds']} s", file=sys.stderr)
        for part in manifest["parts"]:
            key = part["source"]
            if key in result["alone"]:
                continue
            clip = audio[stem][int(part["start"] * 16000) : int(part["end"] * 16000)]
            segments, _ = model.transcribe(clip, language=part["language"], **DECODE)
            hyp = "".join(s.text for s in segments).strip()
            detected, prob, _ = model.detect_language(clip)
            err, n = errors(part["text"], hyp, part["language"])
            result["alone"][key] = {
                "language": part["language"],
                "detected": detected,
                "detected_probability": round(prob, 3),
                "errors": err,
                "ref_units": n,
                "er": round(err / n, 4),
                "hyp": hyp,
            }
    return result


def cli(root: Path, mode: str, model: str) -> dict[str, Any]:
    """One `slower-whisper transcribe` process over every file under `root`, timed from start to exit."""
    env = server_env(model, "cpu")
    env.update(
        WHISPER_LANGUAGE="auto",
        WHISPER_LANGUAGE_DETECTION=mode,
        WHISPER_COMPUTE_TYPE="int8",
        BEAM_SIZE="5",
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-m", "transcription", "transcribe", "--root", str(root), "--force"]
    cmd += ["--beam-size", "5", "--vad", "--word-timestamps", "--no-enrich", "--no-diarize"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"slower-whisper ({mode}) exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    docs = {}
    for path in sorted((root / "whisper_json").glob("*.json")):
        docs[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return {"wall_s": wall, "docs": docs}


def doc_words(doc: dict[str, Any]) -> list[Word]:
    """The document's words, each with its segment's language (the document's when a segment has none);
    a segment without words counts as one word spanning it."""
    out = []
    for seg in doc["segments"]:
        lang = seg.get("language") or doc.get("language")
        ws = seg.get("words") or [{"start": seg["start"], "end": seg["end"], "word": " " + seg["text"]}]
        out += [{"start": w["start"], "end": w["end"], "word": w["word"], "language": lang} for w in ws]
    return out


def doc_summary(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("meta", {})
    return {
        "language": doc.get("language"),
        "languages": doc.get("languages"),
        "warnings": meta.get("warnings", []),
        "speech_without_text": meta.get("speech_without_text", []),
        "transcribe_s": meta.get("timings", {}).get("transcribe"),
    }


# ---------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        cpu = platform.processor() or None
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for dist in ("slower-whisper", "faster-whisper", "ctranslate2"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = None
    return info


def _build(args: argparse.Namespace, work: Path, modes: list[str]) -> tuple[dict, dict, dict]:
    """The layouts' files (manifests), their decoded audio, and a root per CLI mode holding them."""
    from faster_whisper import decode_audio

    layouts = args.layouts or (QUICK if args.quick else list(LAYOUTS))
    built = work / "built"
    built.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for layout in layouts:
        wav, manifest = build(layout, built)
        files[layout] = manifest
    audio = {stem: decode_audio(str(built / f"{stem}.wav")) for stem in files}
    roots = {}
    for mode in modes:
        roots[mode] = work / mode
        (roots[mode] / "raw_audio").mkdir(parents=True, exist_ok=True)
        for stem in files:
            shutil.copyfile(built / f"{stem}.wav", roots[mode] / "raw_audio" / f"{stem}.wav")
    return files, audio, roots


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    modes = [] if args.bare_only else ["chunk", "file"]
    files, audio, roots = _build(args, work, modes)
    base = bare(files, audio, model_path(args.model))
    clis: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(args.repeats):
        for mode in modes if rep % 2 == 0 else list(reversed(modes)):
            r = cli(roots[mode], mode, args.model)
            clis[mode].append(r)
            print(f"repeat {rep + 1} {mode}: {r['wall_s']:.1f} s", file=sys.stderr)

    systems: dict[str, dict[str, list[Word]]] = {
        "bare": {stem: base["files"][stem]["words"] for stem in files},
        **{m: {stem: doc_words(clis[m][-1]["docs"][stem]) for stem in files} for m in modes},
    }
    result: dict[str, Any] = {
        "machine": machine(),
        "model": args.model,
        "settings": {"device": "cpu", "compute_type": "int8", **DECODE},
        "repeats": args.repeats,
        "audio_s": round(sum(float(m["duration"]) for m in files.values()), 1),
        "files": {
            stem: _file_entry(stem, manifest, base, systems, clis, modes) for stem, manifest in files.items()
        },
        "alone": base["alone"],
        "timing": _timing(files, base, clis, modes),
        "summary": {},
    }
    for name in ["alone", *systems]:
        result["summary"][name] = _summary(name, files, base, result["files"])
    return result


def _file_entry(stem: str, manifest: dict, base: dict, systems: dict, clis: dict, modes: list[str]) -> dict:
    """One file's parts, each scored for every system, and each system's view of the file."""
    entry: dict[str, Any] = {"duration": manifest["duration"], "pause_s": manifest["pause_s"], "parts": []}
    scored = {name: score(words[stem], manifest["parts"]) for name, words in systems.items()}
    for i, part in enumerate(manifest["parts"]):
        row = {k: part[k] for k in ("language", "start", "end", "source", "text")}
        row["alone_er"] = base["alone"][part["source"]]["er"]
        row["alone_detected"] = base["alone"][part["source"]]["detected"]
        for name in systems:
            s = scored[name][i]
            row[name] = {k: s[k] for k in ("assigned", "majority", "er", "errors", "ref_units", "hyp")}
        entry["parts"].append(row)
    entry["bare"] = {k: base["files"][stem][k] for k in ("language", "language_probability", "seconds")}
    for mode in modes:
        entry[mode] = doc_summary(clis[mode][-1]["docs"][stem])
    return entry


def _summary(name: str, files: dict, base: dict, entries: dict) -> dict:
    """Pooled error rates over the code-switched files (the control apart), and the control on its own."""
    rows = []
    for stem in [s for s in files if s != CONTROL]:
        for p in entries[stem]["parts"]:
            if name == "alone":
                a = base["alone"][p["source"]]
                rows.append({**a, "majority": a["detected"]})
            else:
                rows.append({"language": p["language"], **p[name]})
    summary = pooled(rows) if rows else {}
    if CONTROL in files:
        parts = entries[CONTROL]["parts"]
        if name == "alone":
            errs = [
                (base["alone"][p["source"]]["errors"], base["alone"][p["source"]]["ref_units"]) for p in parts
            ]
        else:
            errs = [(p[name]["errors"], p[name]["ref_units"]) for p in parts]
        summary["control_en_wer"] = round(sum(e for e, _ in errs) / sum(n for _, n in errs), 4)
    return summary


def _timing(files: dict, base: dict, clis: dict, modes: list[str]) -> dict:
    """Wall and transcription times per CLI mode (medians over repeats), the bare loop's, and their ratios."""
    t: dict[str, Any] = {}
    for mode in modes:
        walls = [r["wall_s"] for r in clis[mode]]
        trans = [
            sum(float(d["meta"].get("timings", {}).get("transcribe", 0.0)) for d in r["docs"].values())
            for r in clis[mode]
        ]
        per_file = {
            stem: round(
                statistics.median(
                    float(r["docs"][stem]["meta"]["timings"]["transcribe"]) for r in clis[mode]
                ),
                2,
            )
            for stem in files
        }
        t[mode] = {
            "wall_s_median": round(statistics.median(walls), 2),
            "wall_s_all": [round(w, 2) for w in walls],
            "transcribe_s_median": round(statistics.median(trans), 2),
            "transcribe_s_all": [round(x, 2) for x in trans],
            "transcribe_s_per_file": per_file,
        }
    t["bare"] = {
        "load_s": base["load_s"],
        "transcribe_s": round(sum(base["files"][s]["seconds"] for s in files), 2),
        "transcribe_s_per_file": {s: base["files"][s]["seconds"] for s in files},
    }
    if not modes:
        return t
    t["chunk_over_file_wall"] = round(t["chunk"]["wall_s_median"] / t["file"]["wall_s_median"], 3)
    t["chunk_over_file_transcribe"] = round(
        t["chunk"]["transcribe_s_median"] / max(1e-9, t["file"]["transcribe_s_median"]), 3
    )
    return t


# ---------------------------------------------------------------- report


def _langs(assigned: dict[str, float]) -> str:
    if not assigned:
        return "-"
    return " ".join(k if v >= 0.995 else f"{k} {v:.0%}" for k, v in assigned.items())


LABELS = {
    "alone": "each part alone, known language",
    "bare": "faster-whisper, detect once",
    "chunk": "slower-whisper, chunk",
    "file": "slower-whisper, file",
}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    systems = [n for n in ("alone", "bare", "chunk", "file") if n in result["summary"]]
    clis = [n for n in ("chunk", "file") if n in systems]
    cols = [k for k in result["summary"]["bare"] if k != "control_en_wer"]
    lines = [
        f"Model `{result['model']}`, CPU int8, beam 5, VAD on, word timestamps; {result['audio_s']} s of "
        f"audio in {len(result['files'])} files; {m['cpu']}, {m['cores']} cores; faster-whisper "
        f"{m['faster-whisper']}, ctranslate2 {m['ctranslate2']}, slower-whisper {m['slower-whisper']}; "
        f"{m['date']}.",
        "",
        "Error rate per language pooled over the code-switched files (WER; zh: CER), parts whose majority "
        "language is right, and the English-only control:",
        "",
        "| system | " + " | ".join(cols) + " | en-only WER |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for name in systems:
        s = result["summary"][name]
        cells = [str(s.get(k, "-")) for k in cols] + [str(s.get("control_en_wer", "-"))]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    t = result["timing"]
    if clis:
        lines += ["", "| slower-whisper | wall s (process) | transcribe s (meta) |", "|---|---|---|"]
        lines += [f"| {n} | {t[n]['wall_s_median']} | {t[n]['transcribe_s_median']} |" for n in clis]
        if "chunk_over_file_wall" in t:
            lines.append(
                f"| chunk / file | {t['chunk_over_file_wall']} | {t['chunk_over_file_transcribe']} |"
            )
        lines += ["", "| file | bare s | " + " | ".join(f"{n} s" for n in clis) + " | chunk / file |"]
        lines.append("|---|---|" + "---|" * (len(clis) + 1))
        for stem in result["files"]:
            cells = [str(t["bare"]["transcribe_s_per_file"][stem])]
            cells += [str(t[n]["transcribe_s_per_file"][stem]) for n in clis]
            ratio = "-"
            if len(clis) == 2:
                c, f = (t[n]["transcribe_s_per_file"][stem] for n in clis)
                ratio = f"{c / max(f, 1e-9):.2f}"
            lines.append(f"| {stem} | " + " | ".join(cells) + f" | {ratio} |")
    lines += [
        "",
        f"Bare faster-whisper: {t['bare']['transcribe_s']} s transcribing in-process (model load "
        f"{t['bare']['load_s']} s).",
    ]
    for stem, f in result["files"].items():
        head = (
            f"**{stem}** ({f['duration']} s, pauses {f['pause_s']} s): bare detected {f['bare']['language']}"
        )
        for n in clis:
            head += f"; {n}: `languages` {json.dumps(f[n]['languages'])}, {len(f[n]['warnings'])} warnings"
        lines += ["", head, "", "| part | s | alone (detected) | " + " | ".join(systems[1:]) + " |"]
        lines.append("|---|---|---|" + "---|" * (len(systems) - 1))
        for p in f["parts"]:
            cells = [f"{p['alone_er']:.2f} ({p['alone_detected']})"]
            cells += [f"{p[n]['er']:.2f} {_langs(p[n]['assigned'])}" for n in systems[1:]]
            where = f"{p['start']:.1f}-{p['end']:.1f}"
            lines.append(
                f"| {p['language']} {Path(p['source']).stem} | {where} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS))
    parser.add_argument("--model", default="base")
    parser.add_argument("--repeats", type=int, default=1, help="CLI runs per mode, alternating order")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "languages.json")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--bare-only", action="store_true", help="skip the slower-whisper runs")
    parser.add_argument("--work", type=Path, help="keep the assembled files and outputs here")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-languages-"))
    try:
        result = run(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
