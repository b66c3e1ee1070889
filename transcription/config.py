"""Settings: the one place that reads flags, environment variables and config files.

Precedence is flag > environment > ``--config`` file > default. Every value is validated here, at start-up,
so a bad setting stops the process before any work with a message that names the setting.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EMOTION_MODEL = "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"

DEVICES = ("auto", "cuda", "cpu")
COMPUTE_TYPES = (
    "default",
    "auto",
    "int8",
    "int8_float16",
    "int8_bfloat16",
    "int8_float32",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")

# Whisper's language codes (tokenizer LANGUAGES of openai/whisper), plus "auto" for detection.
WHISPER_LANGUAGES = frozenset(
    [
        "en",
        "zh",
        "de",
        "es",
        "ru",
        "ko",
        "fr",
        "ja",
        "pt",
        "tr",
        "pl",
        "ca",
        "nl",
        "ar",
        "sv",
        "it",
        "id",
        "hi",
        "fi",
        "vi",
        "he",
        "uk",
        "el",
        "ms",
        "cs",
        "ro",
        "da",
        "hu",
        "ta",
        "no",
        "th",
        "ur",
        "hr",
        "bg",
        "lt",
        "la",
        "mi",
        "ml",
        "cy",
        "sk",
        "te",
        "fa",
        "lv",
        "bn",
        "sr",
        "az",
        "sl",
        "kn",
        "et",
        "mk",
        "br",
        "eu",
        "is",
        "hy",
        "ne",
        "mn",
        "bs",
        "kk",
        "sq",
        "sw",
        "gl",
        "mr",
        "pa",
        "si",
        "km",
        "sn",
        "yo",
        "so",
        "af",
        "oc",
        "ka",
        "be",
        "tg",
        "sd",
        "gu",
        "am",
        "yi",
        "lo",
        "uz",
        "fo",
        "ht",
        "ps",
        "tk",
        "nn",
        "mt",
        "sa",
        "lb",
        "my",
        "bo",
        "tl",
        "mg",
        "as",
        "tt",
        "haw",
        "ln",
        "ha",
        "ba",
        "jw",
        "su",
        "yue",
    ]
)


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    root: Path = Path(".")
    model: str = "large-v3"
    device: str = "auto"
    compute_type: str | None = None  # None: float16 on cuda, int8 on cpu
    language: str | None = None  # None: detect
    batch_size: int = 1  # > 1 uses faster-whisper's batched pipeline
    beam_size: int = 5
    word_timestamps: bool = True
    vad: bool = True
    condition_on_previous_text: bool = False
    hallucination_silence_threshold: float | None = 2.0
    throughput: bool = False  # work across files: packed GPU batches, files in parallel on CPU
    enrich: bool = False
    prosody: bool = True
    emotion: bool = True
    emotion_model: str = DEFAULT_EMOTION_MODEL
    hf_token: str | None = dataclasses.field(default=None, repr=False)
    hf_home: Path | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    max_upload_mb: int = 1024
    workers: int = 2  # concurrent inference workers in the service
    queue_size: int = 32  # queued requests/jobs before the service answers 429/503
    lease_ttl: float = 120.0  # seconds before a dead worker's claim on a file may be taken over
    log_level: str = "INFO"
    log_format: str = "text"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def api_keys(self) -> tuple[str, ...]:
        if not self.api_key:
            return ()
        return tuple(k.strip() for k in self.api_key.split(",") if k.strip())

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if cuda_available() else "cpu"

    def resolved_compute_type(self) -> str:
        if self.compute_type and self.compute_type not in ("default", "auto"):
            return self.compute_type
        return auto_compute_type(self.resolved_device())

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that change a transcript: a change in any of them makes old outputs stale."""
        return {
            "model": self.model,
            "compute_type": self.resolved_compute_type(),
            "language": self.language or "auto",
            "batch_size": self.batch_size,
            "beam_size": self.beam_size,
            "word_timestamps": self.word_timestamps,
            "vad": self.vad,
            "throughput": self.throughput,  # it may choose the batch size itself
            "condition_on_previous_text": self.condition_on_previous_text,
            "hallucination_silence_threshold": self.hallucination_silence_threshold,
        }


@functools.cache  # asked for every input's fingerprint; the device's answer never changes in a process
def auto_compute_type(device: str) -> str:
    """The fastest type this device runs well: float16 on GPUs that have it (int8_float32 on those that do
    not, e.g. before compute capability 5.3), int8 on CPU (float32 where the CPU has no int8 kernels)."""
    preferred = ("float16", "int8_float32", "float32") if device == "cuda" else ("int8", "float32")
    try:
        import ctranslate2

        supported = set(ctranslate2.get_supported_compute_types(device))
    except Exception:  # noqa: BLE001 - no usable device: keep the usual choice; loading will say why
        return preferred[0]
    return next((t for t in preferred if t in supported), preferred[0])


def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all means CPU
        return False


# name -> (environment variable, config-file key, parser)
def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _parse_int(name: str, raw: Any, minimum: int) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _parse_choice(name: str, raw: Any, choices: tuple[str, ...], upper: bool = False) -> str:
    text = str(raw).strip()
    text = text.upper() if upper else text.lower()
    if text not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return text


def _parse_language(name: str, raw: Any) -> str | None:
    text = str(raw).strip().lower()
    if text in ("", "auto"):
        return None
    if text not in WHISPER_LANGUAGES:
        raise ConfigError(f"{name}: unknown language code {raw!r} (use an ISO code such as 'en', or 'auto')")
    return text


def _parse_threshold(name: str, raw: Any) -> float | None:
    text = str(raw).strip().lower()
    if text in ("", "none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: expected seconds or 'none', got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")
    return value


def _non_empty(name: str, raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ConfigError(f"{name}: must not be empty")
    return text


# field -> (environment variable, parser). Flags and config-file keys use the field name.
_FIELDS: dict[str, tuple[str, Any]] = {
    "root": ("SLOWER_WHISPER_ROOT", lambda n, v: Path(_non_empty(n, v))),
    "model": ("WHISPER_MODEL", _non_empty),
    "device": ("WHISPER_DEVICE", lambda n, v: _parse_choice(n, v, DEVICES)),
    "compute_type": ("WHISPER_COMPUTE_TYPE", lambda n, v: _parse_choice(n, v, COMPUTE_TYPES)),
    "language": ("WHISPER_LANGUAGE", _parse_language),
    "batch_size": ("BATCH_SIZE", lambda n, v: _parse_int(n, v, 1)),
    "beam_size": ("BEAM_SIZE", lambda n, v: _parse_int(n, v, 1)),
    "word_timestamps": ("WHISPER_WORD_TIMESTAMPS", _parse_bool),
    "vad": ("WHISPER_VAD", _parse_bool),
    "condition_on_previous_text": ("WHISPER_CONDITION_ON_PREVIOUS_TEXT", _parse_bool),
    "hallucination_silence_threshold": ("WHISPER_HALLUCINATION_SILENCE_THRESHOLD", _parse_threshold),
    "throughput": ("SLOWER_WHISPER_THROUGHPUT", _parse_bool),
    "enrich": ("ENABLE_AUDIO_ENRICHMENT", _parse_bool),
    "prosody": ("ENABLE_PROSODY", _parse_bool),
    "emotion": ("ENABLE_EMOTION", _parse_bool),
    "emotion_model": ("EMOTION_MODEL", _non_empty),
    "hf_token": ("HF_TOKEN", lambda n, v: str(v).strip() or None),
    "hf_home": ("HF_HOME", lambda n, v: Path(_non_empty(n, v))),
    "api_key": ("SLOWER_WHISPER_API_KEY", lambda n, v: str(v).strip() or None),
    "max_upload_mb": ("SLOWER_WHISPER_MAX_UPLOAD_MB", lambda n, v: _parse_int(n, v, 1)),
    "workers": ("SLOWER_WHISPER_WORKERS", lambda n, v: _parse_int(n, v, 1)),
    "queue_size": ("SLOWER_WHISPER_QUEUE_SIZE", lambda n, v: _parse_int(n, v, 1)),
    "lease_ttl": ("SLOWER_WHISPER_LEASE_TTL", lambda n, v: float(_parse_int(n, v, 5))),
    "log_level": ("LOG_LEVEL", lambda n, v: _parse_choice(n, v, LOG_LEVELS, upper=True)),
    "log_format": ("LOG_FORMAT", lambda n, v: _parse_choice(n, v, LOG_FORMATS)),
}

ENV_VARS: dict[str, str] = {name: env for name, (env, _) in _FIELDS.items()}
"""Every environment variable the code reads for its settings, by field name."""


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else _parse_toml(text)
    except ValueError as exc:
        raise ConfigError(f"--config: {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a table of settings")
    # Accept both field names (model) and environment names (WHISPER_MODEL) as keys.
    by_env = {env: name for name, env in ENV_VARS.items()}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in _FIELDS else by_env.get(key)
        if name is None:
            raise ConfigError(f"--config: unknown setting {key!r} in {path}")
        out[name] = value
    return out


def _parse_toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated Settings; raises ConfigError naming the offending setting."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        sources.append(("config", _read_config_file(Path(config_file))))
    sources.append(("env", {n: env[e] for n, e in ENV_VARS.items() if e in env and env[e] != ""}))
    sources.append(("flag", {k: v for k, v in (flags or {}).items() if v is not None}))
    for kind, mapping in sources:
        for name, raw in mapping.items():
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            env_name, parser = _FIELDS[name]
            label = f"--{name.replace('_', '-')}" if kind == "flag" else env_name
            values[name] = parser(label, raw)
    if "log_format" not in values:
        values["log_format"] = "text" if sys.stderr.isatty() else "json"
    settings = Settings(**values)
    if settings.device == "cuda" and not cuda_available():
        raise ConfigError("WHISPER_DEVICE: 'cuda' requested but no CUDA device is visible to CTranslate2")
    return settings


def parse_shard(
    flag: str | None, count_flag: int | None = None, environ: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """`--shard I/N`, else JOB_COMPLETION_INDEX (set by an Indexed Job) with a count from
    `--shard-count` or JOB_COMPLETION_COUNT."""
    env = os.environ if environ is None else environ
    if flag:
        parts = flag.split("/")
        if len(parts) != 2:
            raise ConfigError(f"--shard: expected I/N such as 0/4, got {flag!r}")
        index = _parse_int("--shard", parts[0], 0)
        count = _parse_int("--shard", parts[1], 1)
    elif env.get("JOB_COMPLETION_INDEX", "").strip():
        index = _parse_int("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"], 0)
        raw_count = count_flag if count_flag is not None else env.get("JOB_COMPLETION_COUNT", "").strip()
        if raw_count in ("", None):
            raise ConfigError(
                "JOB_COMPLETION_INDEX is set but the shard count is unknown: "
                "set JOB_COMPLETION_COUNT (the Job's completions) or pass --shard-count"
            )
        count = _parse_int("JOB_COMPLETION_COUNT", raw_count, 1)
    else:
        return None
    if index >= count:
        raise ConfigError(f"shard index {index} must be below the shard count {count}")
    return index, count
