"""Every faster-whisper internal the adapter (transcription/fw_internals.py) relies on still exists, takes the
parameters it is given, and has the defaults and hand-mirrored code the adapter expects. Fast: no audio; one
test loads the offline tiny.en model for the attributes only a loaded model has."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest
from conftest import tiny_env

from transcription import fw_internals
from transcription.fw_internals import MODEL_ATTRIBUTES, RELIES_ON, Internal

_FIX = "the adapter in transcription/fw_internals.py needs updating"


def _resolve(entry: Internal) -> object:
    try:
        obj: object = importlib.import_module(entry.module)
    except ImportError as exc:
        pytest.fail(f"{entry.qualname}: module {entry.module} cannot be imported ({exc}) — {_FIX}")
    for part in entry.name.split("."):
        if not hasattr(obj, part):
            pytest.fail(f"{entry.qualname}: {part!r} missing — {_FIX}")
        obj = getattr(obj, part)
    return obj


def _problems(entry: Internal) -> list[str]:
    obj = _resolve(entry)
    name, out = entry.qualname, []
    if entry.exact_fields:
        fields = {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
        required = {
            f.name
            for f in dataclasses.fields(obj)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        out += [f"{name}: field {p!r} missing" for p in entry.params if p not in fields]
        out += [f"{name}: new required field {r!r} not set" for r in sorted(required - set(entry.params))]
    elif entry.params or entry.defaults:
        params = inspect.signature(obj).parameters  # type: ignore[arg-type]
        out += [f"{name}: parameter {p!r} missing" for p in entry.params if p not in params]
        for p in entry.defaults:
            if p not in params:
                out.append(f"{name}: parameter {p!r} missing")
            elif params[p].default is inspect.Parameter.empty:
                out.append(f"{name}: parameter {p!r} has no default")
    if entry.self_uses is not None:
        used = set(re.findall(r"\bself\.(\w+)", inspect.getsource(obj)))  # type: ignore[arg-type]
        extra = sorted(used - set(entry.self_uses))
        out += [f"{name}: uses self.{u}, which the stand-in lacks" for u in extra]
    if entry.source_has:
        source = inspect.getsource(obj)  # type: ignore[arg-type]
        out += [f"{name}: no longer contains {s!r}" for s in entry.source_has if s not in source]
    return [f"{p} — {_FIX}" for p in out]


@pytest.mark.parametrize("key", sorted(RELIES_ON))
def test_internal_still_matches(key: str) -> None:
    problems = _problems(RELIES_ON[key])
    assert not problems, "\n".join(problems)
    assert fw_internals.get(key) is _resolve(RELIES_ON[key])


def test_decoding_defaults_are_faster_whispers() -> None:
    """The values packing used to copy by hand are what the signature gives."""
    d = fw_internals.decode_defaults()
    assert (d["best_of"], d["patience"], d["length_penalty"], d["no_speech_threshold"]) == (5, 1, 1, 0.6)
    assert d["without_timestamps"] is True and d["suppress_tokens"] == [-1]


def test_loaded_model_attributes() -> None:
    from transcription.asr import Engine
    from transcription.config import load_settings

    model = Engine.load(load_settings({}, None, tiny_env())).model
    missing = []
    for path in MODEL_ATTRIBUTES:
        obj: object = model
        for part in path.split("."):
            if not hasattr(obj, part):
                missing.append(f"faster_whisper.WhisperModel (loaded): attribute {path!r} missing — {_FIX}")
                break
            obj = getattr(obj, part)
    assert not missing, "\n".join(missing)
