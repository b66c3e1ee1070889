"""The packer's choice of the next batch, on the real engine (tiny.en, CPU) and real speech: a full batch
goes before an older lone chunk, until that chunk has waited too long; then it goes first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DATA, tiny_env

from transcription import audio
from transcription.asr import AsrOptions, Engine
from transcription.config import load_settings
from transcription.packing import PackedFile, Packer

pytestmark = pytest.mark.needs_data  # reads ../shared/data

CLIP = DATA / "en_read" / "ljspeech" / "LJ001-0001.wav"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(load_settings({}, None, tiny_env()))


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packing") / "clip.wav"
    audio.normalize(CLIP, out)
    return out


def _queue(packer: Packer, wav: Path, options: AsrOptions) -> PackedFile:
    f = packer.open(wav, options)
    prep = packer.prepare(f, 0)
    assert len(prep.features) == 1  # a short clip: one speech chunk
    packer.accept(prep)
    return f


def test_batch_choice_and_no_starvation(engine: Engine, wav: Path) -> None:
    finished: list[PackedFile] = []
    failed: list[tuple[PackedFile, BaseException]] = []
    packer = Packer(engine, 2, finished.append, lambda f, e: failed.append((f, e)))
    plain = AsrOptions(language="en")
    prompted = replace(plain, initial_prompt="A reading from a history of printing.")
    files = [_queue(packer, wav, prompted)]  # queued first, alone under its options
    files += [_queue(packer, wav, plain) for _ in range(4)]

    key, items = packer.take()  # a full batch goes before the older, lone chunk
    assert key[1].initial_prompt is None and len(items) == 2
    packer.run(key, items)

    packer.max_wait_s = 0.0  # now the lone chunk has waited "too long": it goes before a full batch
    key, items = packer.take()
    assert key[1].initial_prompt == prompted.initial_prompt and len(items) == 1
    packer.run(key, items)

    packer.max_wait_s = 60.0
    key, items = packer.take()
    assert key[1].initial_prompt is None and len(items) == 2
    packer.run(key, items)
    assert packer.take() is None and not packer.pending

    assert not failed and sorted(map(id, finished)) == sorted(map(id, files))
    texts = [" ".join(s.text for s in packer.conclude(f).segments).lower() for f in finished]
    assert all("printing" in t for t in texts), texts
    assert packer.budget.used == 0  # every chunk's features were given back
