"""Shared fixtures: the real speech data beside the repo (tests that need it skip without it), the offline
tiny.en model, and a CLI runner."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real speech the accuracy and end-to-end tests read; SLOWER_WHISPER_TEST_DATA points elsewhere.
DATA = Path(os.environ.get("SLOWER_WHISPER_TEST_DATA") or REPO.parent / "shared" / "data")
NO_DATA = f"test data not found at {DATA} (../shared/data beside the repo, or SLOWER_WHISPER_TEST_DATA)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_data: reads the speech data (DATA); skipped when it is missing")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only the tests that read the data skip without it; the unit tests still run.
    if DATA.is_dir():
        return
    for item in items:
        if item.get_closest_marker("needs_data") or "data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=NO_DATA))


@pytest.fixture(scope="session")
def data() -> Path:
    """The data folder; a test (or fixture) that asks for it is skipped when it is missing."""
    if not DATA.is_dir():
        pytest.skip(NO_DATA)
    return DATA


def tiny_env(root: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a CLI run on CPU with the offline tiny.en model and no network."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_", "ENABLE_", "SLOWER_WHISPER_"))
    }
    env.update(
        {
            "WHISPER_MODEL": "tiny.en",
            "WHISPER_DEVICE": "cpu",
            "WHISPER_COMPUTE_TYPE": "int8",
            "HF_HUB_OFFLINE": "1",
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "ENABLE_AUDIO_ENRICHMENT": "false",
        }
    )
    if root is not None:
        env["SLOWER_WHISPER_ROOT"] = str(root)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transcription", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else tiny_env(),
        timeout=timeout,
        cwd=cwd or REPO,
    )


def add_input(root: Path, src: Path, name: str | None = None) -> Path:
    dest = root / "raw_audio" / (name or src.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def normalize_text(text: str) -> list[str]:
    """The one text normalisation for every WER figure: lower case, no punctuation, digits as words."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("i.e.", "ie")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)
    ones = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    text = re.sub(r"\b(\d)\b", lambda m: ones[int(m.group(1))], text)
    return text.split()


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    refs = [" ".join(normalize_text(r)) for r in references]
    hyps = [" ".join(normalize_text(h)) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, timeout=300)
