"""`models` and `doctor` as users run them."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
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


def _help(command: str) -> str:
    from transcription.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(out.getvalue().split())


def test_each_command_lists_the_flags_its_settings_declare(monkeypatch: pytest.MonkeyPatch) -> None:
    from transcription.config import BOOL_FIELDS, COMMANDS, SETTINGS, flag_name

    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each help text appears whole
    own = {"doctor": {"model", "device"}}  # the doctor words these two flags itself
    for command in COMMANDS:
        text = _help(command)
        for name, spec in SETTINGS.items():
            flag = flag_name(name)
            listed = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None
            if command in spec.commands:
                assert listed and spec.help is not None and " ".join(spec.help.split()) in text, (
                    command,
                    flag,
                )
                assert (f"--no-{flag[2:]}" in text) == (name in BOOL_FIELDS), (command, flag)
            else:
                assert listed == (name in own.get(command, ())), (command, flag)


def test_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from transcription.cli import build_parser, settings_from_args
    from transcription.config import ENV_VARS

    for env in ENV_VARS.values():
        monkeypatch.delenv(env, raising=False)

    args = build_parser().parse_args(
        ["transcribe", "--device", "cpu", "--batch-size", "4", "--no-vad", "--language", "de", "--throughput"]
    )
    s = settings_from_args(args)
    assert (s.device, s.batch_size, s.vad, s.language, s.throughput) == ("cpu", 4, False, "de", True)
    s = settings_from_args(build_parser().parse_args(["enrich", "--no-emotion", "--log-format", "json"]))
    assert (s.emotion, s.prosody, s.log_format) == (False, True, "json")


@pytest.mark.parametrize("command", ["transcribe", "watch"])
def test_speaker_counts_without_diarization_exit_2_with_the_fix(tmp_path: Path, command: str) -> None:
    """Counts that only shape a diarization are refused without one, not silently ignored."""
    (tmp_path / "raw_audio").mkdir()
    result = run_cli(command, "--root", str(tmp_path), "--num-speakers", "2", env=tiny_env(), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--num-speakers" in result.stderr and "--diarize" in result.stderr
    env = tiny_env(DIARIZATION_MIN_SPEAKERS="2")
    result = run_cli(command, "--root", str(tmp_path), env=env, timeout=120)
    assert result.returncode == 2 and "DIARIZATION_MIN_SPEAKERS" in result.stderr, result.stderr[-2000:]
    # With diarization the same counts are taken (nothing to transcribe here: exit 0).
    if command == "transcribe":
        result = run_cli(command, "--root", str(tmp_path), "--num-speakers", "2", "--diarize", env=tiny_env())
        assert result.returncode == 0, result.stderr[-2000:]
