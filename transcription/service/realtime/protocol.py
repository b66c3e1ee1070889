"""OpenAI's Realtime transcription protocol: reading client events and writing server events.

Two dialects of the session set-up are read: the beta `transcription_session.update` (`input_audio_format`,
`input_audio_transcription`, `turn_detection`) and the GA `session.update` with `session.type =
"transcription"` (`audio.input.{format, transcription, turn_detection}`); the server answers in the
dialect it was asked in. A session update is applied whole or not at all. Anything this server cannot do
as asked (another audio format, noise reduction, semantic VAD, logprobs) is refused with an `error` event
rather than ignored, and so is a field neither dialect has (`unknown_parameter`, as OpenAI answers a
misspelt one). What an error event repeats of a client's input is cut to a short prefix: a client must not
be able to make the server hold (or send) copies of its messages.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from dataclasses import dataclass, field, replace
from typing import Any

from transcription.config import english_only_refusal

from .. import access
from ..access import ServedModel
from ..errors import ApiError

WIRE_SAMPLE_RATE = 24_000  # the pcm16 a client sends, as OpenAI's; the model hears audio.SAMPLE_RATE
_ALPHABET = string.ascii_letters + string.digits

# OpenAI's defaults for server VAD.
DEFAULT_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 500
MAX_PREFIX_PADDING_MS = 5_000
MIN_SILENCE_DURATION_MS = 100
MAX_SILENCE_DURATION_MS = 10_000
MAX_PROMPT_CHARS = 2_000
MAX_ECHO_CHARS = 64  # of a client's value quoted in an error message, or of its event_id echoed back
MAX_ERROR_MESSAGE_CHARS = 500

# The fields of each object of a session update, as OpenAI's clients send them (the `openai` package's
# types); `slower_whisper` is this server's own extension.
_BETA_SESSION = {
    "input_audio_format",
    "input_audio_transcription",
    "turn_detection",
    "input_audio_noise_reduction",
    "include",
    "modalities",
    "client_secret",
    "slower_whisper",
}
_GA_SESSION = {"type", "audio", "include", "slower_whisper"}
_GA_AUDIO = {"input"}
_GA_INPUT = {"format", "transcription", "turn_detection", "noise_reduction"}
_GA_FORMAT = {"type", "rate"}
_BETA_TRANSCRIPTION = {"model", "language", "prompt"}
_GA_TRANSCRIPTION = _BETA_TRANSCRIPTION | {"delay", "keywords", "languages"}
# create_response and interrupt_response concern responses, which a transcription session never makes.
_TURN_DETECTION = {
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
    "idle_timeout_ms",
    "eagerness",
}
_EXTENSION = {"enrich"}


def quoted(value: Any) -> str:
    """A client's value for an error message: its repr, cut to a short prefix."""
    text = value if isinstance(value, str) else repr(value)
    clipped = text[:MAX_ECHO_CHARS]
    shown = repr(clipped) if isinstance(value, str) else clipped
    return shown + ("…" if len(text) > MAX_ECHO_CHARS else "")


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `event_…`, `item_…`, `sess_…`."""
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(21))}"


class ClientError(Exception):
    """A client event this server refuses: answered with an `error` event, and the session goes on."""

    def __init__(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS


@dataclass(frozen=True)
class SessionConfig:
    model: str
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)  # None: manual commits
    enrich: bool = False  # Stage 2 prosody of each completed turn (a slower-whisper extension)


# ------------------------------------------------------------------ client events


def parse_event(text: str) -> dict[str, Any]:
    """One client message: a JSON object with a string `type`."""
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise ClientError("invalid_json", f"the message is not valid JSON: {exc}") from None
    except RecursionError:
        raise ClientError("invalid_json", "the message nests arrays or objects too deeply") from None
    if not isinstance(event, dict):
        raise ClientError("invalid_event", "an event must be a JSON object")
    event_id = client_event_id(event)
    if not isinstance(event.get("type"), str):
        raise ClientError("invalid_event", "the event has no 'type'", "type", event_id)
    return event


def client_event_id(event: dict[str, Any]) -> str | None:
    """The client's `event_id`, to echo in an error about its event (cut to a short prefix)."""
    event_id = event.get("event_id")
    return event_id[:MAX_ECHO_CHARS] if isinstance(event_id, str) else None


def apply_beta_update(
    config: SessionConfig, session: Any, served: ServedModel, multilingual: bool
) -> SessionConfig:
    """`transcription_session.update`: the fields given replace the current ones."""
    s = _fields(session, "session", _BETA_SESSION)
    _refuse_unsupported(s, "session")
    if "input_audio_format" in s and s["input_audio_format"] != "pcm16":
        raise ClientError(
            "unsupported_audio_format",
            "input_audio_format must be 'pcm16' (16-bit little-endian mono at 24 kHz)",
            "session.input_audio_format",
        )
    if "input_audio_transcription" in s:
        config = _transcription(
            config,
            s["input_audio_transcription"],
            "session.input_audio_transcription",
            served,
            _BETA_TRANSCRIPTION,
        )
    if "turn_detection" in s:
        config = replace(
            config, turn_detection=_turn_detection(s["turn_detection"], "session.turn_detection")
        )
    config = _extension(config, s)
    _check_language(config, multilingual, "session.input_audio_transcription.language")
    return config


def apply_ga_update(
    config: SessionConfig, session: Any, served: ServedModel, multilingual: bool
) -> SessionConfig:
    """`session.update` with a transcription session (`session.type = "transcription"`)."""
    s = _fields(session, "session", _GA_SESSION)
    if s.get("type", "transcription") != "transcription":
        raise ClientError(
            "unsupported_session_type",
            "this server only runs transcription sessions: session.type must be 'transcription'",
            "session.type",
        )
    if s.get("include"):
        raise ClientError("unsupported_parameter", "include (logprobs) is not supported", "session.include")
    audio = _fields(s.get("audio", {}), "session.audio", _GA_AUDIO)
    given = _fields(audio.get("input", {}), "session.audio.input", _GA_INPUT)
    if given.get("noise_reduction") is not None:
        raise ClientError(
            "unsupported_parameter",
            "noise reduction is not supported: set noise_reduction to null",
            "session.audio.input.noise_reduction",
        )
    if "format" in given:
        fmt = _fields(given["format"], "session.audio.input.format", _GA_FORMAT)
        if fmt.get("type") != "audio/pcm" or fmt.get("rate", WIRE_SAMPLE_RATE) != WIRE_SAMPLE_RATE:
            raise ClientError(
                "unsupported_audio_format",
                "the input format must be {'type': 'audio/pcm', 'rate': 24000}",
                "session.audio.input.format",
            )
    if "transcription" in given:
        config = _transcription(
            config, given["transcription"], "session.audio.input.transcription", served, _GA_TRANSCRIPTION
        )
    if "turn_detection" in given:
        config = replace(
            config,
            turn_detection=_turn_detection(given["turn_detection"], "session.audio.input.turn_detection"),
        )
    config = _extension(config, s)
    _check_language(config, multilingual, "session.audio.input.transcription.language")
    return config


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClientError("invalid_value", f"{param} must be an object", param)
    return value


def _fields(value: Any, param: str, known: set[str]) -> dict[str, Any]:
    """`value` as an object of only the `known` fields: another is refused, named, as OpenAI refuses it."""
    obj = _object(value, param)
    for name in obj:
        if name not in known:
            where = f"{param}.{name[:MAX_ECHO_CHARS]}"
            raise ClientError("unknown_parameter", f"Unknown parameter: '{where}'.", where)
    return obj


def _refuse_unsupported(s: dict[str, Any], param: str) -> None:
    if s.get("input_audio_noise_reduction") is not None:
        raise ClientError(
            "unsupported_parameter",
            "noise reduction is not supported: set input_audio_noise_reduction to null",
            f"{param}.input_audio_noise_reduction",
        )
    if s.get("include"):
        raise ClientError("unsupported_parameter", "include (logprobs) is not supported", f"{param}.include")


def _transcription(
    config: SessionConfig, value: Any, param: str, served: ServedModel, known: set[str]
) -> SessionConfig:
    t = _fields(value, param, known)
    for name, instead in (("keywords", "prompt"), ("languages", "language")):
        if t.get(name):
            raise ClientError(
                "unsupported_parameter", f"{name} is not supported: use {instead}", f"{param}.{name}"
            )
    try:
        model = served.check(t.get("model", config.model), f"{param}.model")
        language = access.language(t.get("language", config.language), f"{param}.language")
    except ApiError as exc:
        raise ClientError(exc.code, exc.message, exc.param) from None
    prompt = t.get("prompt", config.prompt)
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
        raise ClientError(
            "invalid_value",
            f"prompt must be text of at most {MAX_PROMPT_CHARS} characters",
            f"{param}.prompt",
        )
    return replace(config, model=model, language=language, prompt=prompt or None)


def _turn_detection(value: Any, param: str) -> TurnDetection | None:
    if value is None:
        return None
    t = _fields(value, param, _TURN_DETECTION)
    kind = t.get("type", "server_vad")
    if kind != "server_vad":
        raise ClientError(
            "unsupported_turn_detection",
            f"turn detection {quoted(kind)} is not supported: use 'server_vad', or null for manual commits",
            f"{param}.type",
        )
    if t.get("idle_timeout_ms") is not None:
        raise ClientError(
            "unsupported_parameter",
            "idle_timeout_ms is not supported: set it to null",
            f"{param}.idle_timeout_ms",
        )
    threshold = _number(t, "threshold", DEFAULT_THRESHOLD, 0.0, 1.0, param)
    prefix = _number(t, "prefix_padding_ms", DEFAULT_PREFIX_PADDING_MS, 0, MAX_PREFIX_PADDING_MS, param)
    silence = _number(
        t,
        "silence_duration_ms",
        DEFAULT_SILENCE_DURATION_MS,
        MIN_SILENCE_DURATION_MS,
        MAX_SILENCE_DURATION_MS,
        param,
    )
    return TurnDetection(float(threshold), int(prefix), int(silence))


def _number(t: dict[str, Any], name: str, default: float, low: float, high: float, param: str) -> float:
    value = t.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ClientError("invalid_value", f"{name} must be a number from {low} to {high}", f"{param}.{name}")
    return value


def _extension(config: SessionConfig, s: dict[str, Any]) -> SessionConfig:
    """`session.slower_whisper.enrich`: prosody of each completed turn (ours; OpenAI clients omit it)."""
    ext = s.get("slower_whisper")
    if ext is None:
        return config
    ext = _fields(ext, "session.slower_whisper", _EXTENSION)
    enrich = ext.get("enrich", config.enrich)
    if not isinstance(enrich, bool):
        raise ClientError("invalid_value", "enrich must be true or false", "session.slower_whisper.enrich")
    return replace(config, enrich=enrich)


def _check_language(config: SessionConfig, multilingual: bool, param: str) -> None:
    refused = english_only_refusal(config.model, multilingual, language=config.language)
    if refused is not None:
        raise ClientError("unsupported_language", refused[1], param)


# ------------------------------------------------------------------ server events


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": new_id("event"), "type": kind, **fields}


def error_event(
    code: str,
    message: str,
    param: str | None = None,
    event_id: str | None = None,
    kind: str = "invalid_request_error",
) -> dict[str, Any]:
    error = {
        "type": kind,
        "code": code,
        "message": message[:MAX_ERROR_MESSAGE_CHARS],
        "param": param,
        "event_id": event_id,
    }
    return server_event("error", error=error)


def beta_session(session_id: str, config: SessionConfig, expires_at: int) -> dict[str, Any]:
    """The session as `transcription_session.created` / `.updated` describe it."""
    td = config.turn_detection
    return {
        "id": session_id,
        "object": "realtime.transcription_session",
        "expires_at": expires_at,
        "modalities": ["text"],
        "input_audio_format": "pcm16",
        "input_audio_transcription": {
            "model": config.model,
            "language": config.language,
            "prompt": config.prompt,
        },
        "turn_detection": _turn_detection_out(td),
        "input_audio_noise_reduction": None,
        "include": [],
        "slower_whisper": {"enrich": config.enrich},
    }


def ga_session(session_id: str, config: SessionConfig, expires_at: int) -> dict[str, Any]:
    """The session as GA `session.created` / `session.updated` describe a transcription session."""
    return {
        "type": "transcription",
        "id": session_id,
        "object": "realtime.transcription_session",
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": WIRE_SAMPLE_RATE},
                "transcription": {
                    "model": config.model,
                    "language": config.language,
                    "prompt": config.prompt,
                },
                "turn_detection": _turn_detection_out(config.turn_detection),
                "noise_reduction": None,
            }
        },
        "include": [],
        "slower_whisper": {"enrich": config.enrich},
    }


def _turn_detection_out(td: TurnDetection | None) -> dict[str, Any] | None:
    if td is None:
        return None
    return {
        "type": "server_vad",
        "threshold": td.threshold,
        "prefix_padding_ms": td.prefix_padding_ms,
        "silence_duration_ms": td.silence_duration_ms,
    }


def expires_at(max_session_s: float) -> int:
    return int(time.time() + max_session_s)
