"""Emotion model loading and inference, proven with a small model of the audeering architecture.

No emotion weights can be fetched here, so each test builds a random-weight wav2vec2 regression model of
the same layout (backbone ``wav2vec2.*`` + head ``classifier.dense``/``classifier.out_proj``), saves it
with ``save_pretrained`` and loads it back through the product's loader.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from transcription.config import DEFAULT_EMOTION_MODEL, Settings  # noqa: E402
from transcription.enrich import emotion as emotion_mod  # noqa: E402
from transcription.enrich import emotion_model_info, emotion_model_status, enrich_document  # noqa: E402
from transcription.enrich.emotion_model import Wav2Vec2EmotionRegressor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = {0: "arousal", 1: "dominance", 2: "valence"}


def tiny_config(**overrides) -> transformers.Wav2Vec2Config:
    """The audeering layout (layer-normed feature encoder, stable layer norm) at toy size."""
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    values.update(overrides)
    return transformers.Wav2Vec2Config(**values)


def save_tiny(path: Path, *, preprocessor: bool = True, seed: int = 0) -> Wav2Vec2EmotionRegressor:
    torch.manual_seed(seed)
    model = Wav2Vec2EmotionRegressor(tiny_config()).eval()
    # Scale the head so outputs spread across and beyond 0..1: the clipping is then exercised too.
    with torch.no_grad():
        model.classifier.out_proj.weight.mul_(8.0)
        model.classifier.out_proj.bias.copy_(torch.tensor([0.5, 0.5, 0.5]))
    model.save_pretrained(path)
    if preprocessor:
        transformers.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True
        ).save_pretrained(path)
    return model


def settings_for(path: Path, **kw) -> Settings:
    return Settings(emotion_model=str(path), device="cpu", **kw)


def load_clip(name: str) -> np.ndarray:
    from faster_whisper import decode_audio

    return decode_audio(str(DATA / "emotion" / "emodb_de" / name), sampling_rate=16000)


def reference_scores(model: Wav2Vec2EmotionRegressor, clip: np.ndarray) -> np.ndarray:
    """What the saved model itself says, with the feature extractor's own normalisation."""
    fe = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    inputs = fe(clip, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        return model(inputs["input_values"], attention_mask=inputs["attention_mask"]).numpy()[0]


@pytest.mark.needs_data
def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = save_tiny(tmp_path / "m")
    clip = load_clip("03a01Wa.wav")
    expected = reference_scores(model, clip)
    loaded = emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))
    assert loaded.order == ("arousal", "dominance", "valence")
    got = emotion_mod.raw_scores(loaded, [clip])[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # End to end: the stored values are the clipped raw scores, named by the config's labels.
    results, errors, meta = emotion_mod.score_segments(
        clip, [(0.0, clip.size / 16000)], settings_for(tmp_path / "m")
    )
    want = dict(zip(("arousal", "dominance", "valence"), np.clip(expected, 0, 1), strict=True))
    for key in ("arousal", "dominance", "valence"):
        assert results[0][key] == pytest.approx(want[key], abs=1e-4)
        assert 0.0 <= results[0][key] <= 1.0
    assert errors == [[]]
    assert meta["device"] == "cpu" and "clipped" in meta["outputs"]
    assert meta["normalisation"].startswith("preprocessor_config.json do_normalize=true")


def test_model_is_cached_per_process(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m")
    a = emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))
    b = emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))
    assert a is b


@pytest.mark.needs_data
def test_batched_windows_match_single_inference(tmp_path: Path) -> None:
    """Padding in a batch must not change a clip's scores (masked pooling + attention mask)."""
    save_tiny(tmp_path / "m")
    loaded = emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))
    clips = [load_clip(n) for n in ("03a01Fa.wav", "03a01Nc.wav", "03a02Ta.wav")]
    batched = emotion_mod.raw_scores(loaded, clips)
    single = np.stack([emotion_mod.raw_scores(loaded, [c])[0] for c in clips])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)


@pytest.mark.needs_data
def test_long_segment_is_windowed_and_pooled(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m")
    settings = settings_for(tmp_path / "m")
    clip = np.concatenate(
        [load_clip(n) for n in ("03a01Fa.wav", "03a01Nc.wav", "03a01Wa.wav", "03a02Ta.wav")] * 2
    )
    assert clip.size / 16000 > emotion_mod.WINDOW_S  # about 14 s: two windows
    loaded = emotion_mod.load_emotion_model(settings)
    parts = emotion_mod.windows(clip.size, int(emotion_mod.WINDOW_S * 16000))
    assert len(parts) == 2
    raw = emotion_mod.raw_scores(loaded, [clip[a:b] for a, b in parts])
    pooled = np.average(raw, axis=0, weights=[b - a for a, b in parts])
    results, _, _ = emotion_mod.score_segments(clip, [(0.0, clip.size / 16000)], settings)
    assert results[0]["arousal"] == pytest.approx(float(np.clip(pooled[0], 0, 1)), abs=1e-4)


@pytest.mark.needs_data
def test_too_short_segment_is_null_with_reason(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m")
    clip = load_clip("03a01Nc.wav")
    results, errors, _ = emotion_mod.score_segments(clip, [(0.0, 0.2)], settings_for(tmp_path / "m"))
    assert results[0]["arousal"] is None and results[0]["valence"] is None
    assert "at least 0.5 s" in errors[0][0]


def _rewrite_weights(path: Path, edit) -> None:
    weights = load_file(path / "model.safetensors")
    edit(weights)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_head_weight_is_refused(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m")
    _rewrite_weights(tmp_path / "m", lambda w: w.pop("classifier.out_proj.weight"))
    with pytest.raises(
        emotion_mod.EmotionUnavailable, match=r"missing weights.*classifier\.out_proj\.weight"
    ):
        emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))


def test_unexpected_weight_is_refused(tmp_path: Path) -> None:
    save_tiny(tmp_path / "m")
    _rewrite_weights(tmp_path / "m", lambda w: w.__setitem__("classifier.extra.weight", torch.zeros(3, 3)))
    with pytest.raises(
        emotion_mod.EmotionUnavailable, match=r"unexpected weights.*classifier\.extra\.weight"
    ):
        emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))


def test_stock_classification_checkpoint_is_refused(tmp_path: Path) -> None:
    """A stock sequence-classification head (projector + classifier) is not the regression head."""
    torch.manual_seed(0)
    transformers.Wav2Vec2ForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "stock")
    with pytest.raises(emotion_mod.EmotionUnavailable, match="does not match the emotion regressor"):
        emotion_mod.load_emotion_model(settings_for(tmp_path / "stock"))


@pytest.mark.needs_data
def test_legacy_weight_norm_names_load_identically(tmp_path: Path) -> None:
    """Checkpoints saved before torch parametrizations (like the audeering one) name weight_g/weight_v."""
    model = save_tiny(tmp_path / "m")

    def to_legacy(w: dict) -> None:
        for new, old in (
            (".parametrizations.weight.original0", ".weight_g"),
            (".parametrizations.weight.original1", ".weight_v"),
        ):
            for key in [k for k in w if k.endswith(new)]:
                w[key.replace(new, old)] = w.pop(key)

    _rewrite_weights(tmp_path / "m", to_legacy)
    assert any(k.endswith("weight_g") for k in load_file(tmp_path / "m" / "model.safetensors"))
    clip = load_clip("03a01Fa.wav")
    loaded = emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))
    np.testing.assert_allclose(
        emotion_mod.raw_scores(loaded, [clip])[0], reference_scores(model, clip), atol=1e-5
    )


@pytest.mark.needs_data
def test_missing_preprocessor_config_uses_explicit_normalisation(tmp_path: Path) -> None:
    model = save_tiny(tmp_path / "m", preprocessor=False)
    clip = load_clip("03a01Nc.wav")
    settings = settings_for(tmp_path / "m")
    _, _, meta = emotion_mod.score_segments(clip, [(0.0, clip.size / 16000)], settings)
    assert "zero-mean unit-variance" in meta["normalisation"]
    got = emotion_mod.raw_scores(emotion_mod.load_emotion_model(settings), [clip])[0]
    np.testing.assert_allclose(got, reference_scores(model, clip), atol=1e-5)


def test_wrong_label_names_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(
        id2label={0: "happy", 1: "sad", 2: "angry"}, label2id={"happy": 0, "sad": 1, "angry": 2}
    )
    Wav2Vec2EmotionRegressor(cfg).save_pretrained(tmp_path / "m")
    with pytest.raises(emotion_mod.EmotionUnavailable, match="arousal, dominance, valence"):
        emotion_mod.load_emotion_model(settings_for(tmp_path / "m"))


@pytest.mark.needs_data
def test_uncached_hub_model_fails_emotion_but_prosody_completes(tmp_path: Path) -> None:
    settings = Settings(hf_home=tmp_path / "hf", device="cpu")
    assert settings.emotion_model == DEFAULT_EMOTION_MODEL
    clip = load_clip("03a01Wa.wav")
    doc = {
        "language": "de",
        "segments": [{"id": 0, "start": 0.0, "end": clip.size / 16000, "text": "x", "words": []}],
    }
    enrich_document(doc, clip, settings)
    state = doc["segments"][0]["audio_state"]
    assert state["status"]["prosody"] == "ok" and state["prosody"]["pitch"]["mean_hz"] > 0
    assert state["status"]["emotion"] == "failed" and state["emotion"] is None
    message = next(e for e in state["status"]["errors"] if e.startswith("emotion:"))
    assert "slower-whisper models download " + DEFAULT_EMOTION_MODEL in message
    assert "CC-BY-NC-SA-4.0" in message
    assert doc["meta"]["enrichment"]["emotion"]["error"] == message.removeprefix("emotion: ")


def test_status_line_names_cache_state_and_licence(tmp_path: Path) -> None:
    missing = emotion_model_status(Settings(hf_home=tmp_path / "hf"))
    assert "NOT AVAILABLE" in missing and "CC-BY-NC-SA-4.0" in missing
    save_tiny(tmp_path / "m")
    info = emotion_model_info(settings_for(tmp_path / "m"))
    assert info["available"] is True and info["path"] == str(tmp_path / "m")
    assert "cached at" in emotion_model_status(settings_for(tmp_path / "m"))


@pytest.mark.needs_data
def test_hub_cache_layout_resolves_offline(tmp_path: Path) -> None:
    """A model placed in HF_HOME/hub the way snapshot_download stores it resolves without network."""
    repo = tmp_path / "hf" / "hub" / ("models--" + DEFAULT_EMOTION_MODEL.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    save_tiny(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    settings = Settings(hf_home=tmp_path / "hf", device="cpu")
    path, revision = emotion_mod.resolve_emotion_model(settings)
    assert revision == commit and path == repo / "snapshots" / commit
    clip = load_clip("03a01Fa.wav")
    doc = {"segments": [{"id": 0, "start": 0.0, "end": clip.size / 16000, "text": "x", "words": []}]}
    enrich_document(doc, clip, settings)
    emo = doc["segments"][0]["audio_state"]["emotion"]
    assert emo["model"] == DEFAULT_EMOTION_MODEL and 0.0 <= emo["arousal"] <= 1.0
    assert doc["meta"]["enrichment"]["emotion"]["revision"] == commit
    assert doc["meta"]["enrichment"]["emotion"]["licence"] == "CC-BY-NC-SA-4.0"


def test_download_offline_raises_clear_error(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "from transcription.config import Settings\n"
        "from transcription.enrich import download_emotion_model, EmotionUnavailable\n"
        f"s = Settings(hf_home=Path({str(tmp_path / 'hf')!r}))\n"
        "try:\n"
        "    download_emotion_model(s)\n"
        "except EmotionUnavailable as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("REFUSED cannot download " + DEFAULT_EMOTION_MODEL)
    assert "HF_HUB_OFFLINE" in out.stdout


def test_local_directory_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(emotion_mod.EmotionUnavailable, match="does not exist"):
        emotion_mod.resolve_emotion_model(Settings(emotion_model=str(tmp_path / "nope")))
    json.dumps(emotion_model_info(Settings(emotion_model=str(tmp_path / "nope"))))  # printable as JSON
