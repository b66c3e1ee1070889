"""Settings: the one place that reads flags, environment variables and config files.

Precedence is flag > environment > ``--config`` file > default. Every value is validated here, at start-up,
so a bad setting stops the process before any work with a message that names the setting.

Each setting is declared once, as a `Settings` field whose `Spec` metadata says how it is read (variable,
parser), which commands take its flag, and whether it changes a transcript or is an engine option. The
environment table, config-file keys, CLI flags, `asr.AsrOptions.from_settings` and the fingerprint are all
derived from that declaration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hardware
from .errors import UsageError

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

# Whisper's languages, code -> English name, as openai/whisper's tokenizer lists them (its LANGUAGES). The one
# list: settings and requests validate codes against it, verbose_json reports the name.
_NAMES = (
    "en english,zh chinese,de german,es spanish,ru russian,ko korean,fr french,ja japanese,pt portuguese,"
    "tr turkish,pl polish,ca catalan,nl dutch,ar arabic,sv swedish,it italian,id indonesian,hi hindi,"
    "fi finnish,vi vietnamese,he hebrew,uk ukrainian,el greek,ms malay,cs czech,ro romanian,da danish,"
    "hu hungarian,ta tamil,no norwegian,th thai,ur urdu,hr croatian,bg bulgarian,lt lithuanian,la latin,"
    "mi maori,ml malayalam,cy welsh,sk slovak,te telugu,fa persian,lv latvian,bn bengali,sr serbian,"
    "az azerbaijani,sl slovenian,kn kannada,et estonian,mk macedonian,br breton,eu basque,is icelandic,"
    "hy armenian,ne nepali,mn mongolian,bs bosnian,kk kazakh,sq albanian,sw swahili,gl galician,mr marathi,"
    "pa punjabi,si sinhala,km khmer,sn shona,yo yoruba,so somali,af afrikaans,oc occitan,ka georgian,"
    "be belarusian,tg tajik,sd sindhi,gu gujarati,am amharic,yi yiddish,lo lao,uz uzbek,fo faroese,"
    "ht haitian creole,ps pashto,tk turkmen,nn nynorsk,mt maltese,sa sanskrit,lb luxembourgish,my myanmar,"
    "bo tibetan,tl tagalog,mg malagasy,as assamese,tt tatar,haw hawaiian,ln lingala,ha hausa,ba bashkir,"
    "jw javanese,su sundanese,yue cantonese"
)
LANGUAGE_NAMES: dict[str, str] = dict(item.split(" ", 1) for item in _NAMES.split(","))
WHISPER_LANGUAGES = frozenset(LANGUAGE_NAMES)  # "auto" (detect) is accepted besides these

# The CLI's commands, for `Spec.commands`: which of them take a setting's flag.
COMMANDS = ("transcribe", "enrich", "watch", "serve", "models", "doctor")
_RUNS = ("transcribe", "watch", "serve")  # the commands that transcribe


# The ranges of numeric settings (README, "Settings"): generous for real use, far below what breaks a process.
MAX_BATCH_SIZE = 256
MAX_BEAM_SIZE = 32
MAX_UPLOAD_MB = 1024 * 1024  # 1 TiB: uploads stream to disk, so only the volume bounds them
MAX_WORKERS = 256
MAX_QUEUE_SIZE = 100_000
MAX_LEASE_TTL_S = 86_400
MAX_THRESHOLD_S = 3_600.0
MAX_SHARDS = 100_000  # Kubernetes' own limit on an Indexed Job's completions
MAX_SPEAKERS = 20  # the most speakers the diarizers are asked to tell apart in one recording
MAX_REALTIME_SESSIONS = 1_000

TASKS = ("transcribe", "translate")
LANGUAGE_DETECTION = ("chunk", "file")


class ConfigError(UsageError, ValueError):
    """A setting has an invalid value; the message names the setting."""

    def user_message(self) -> str:
        return f"configuration error: {self}"


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _parse_int(name: str, raw: Any, minimum: int, maximum: int) -> int:
    """An integer within [minimum, maximum]: an absurd value (a beam of 2**31) is refused here, at start-up,
    not discovered as an out-of-memory kill or a library error on every file."""
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: must be between {minimum} and {maximum}, got {value}")
    return value


def _int_in(minimum: int, maximum: int) -> Any:
    return lambda n, v: _parse_int(n, v, minimum, maximum)


def _parse_choice(name: str, raw: Any, choices: tuple[str, ...], upper: bool = False) -> str:
    text = str(raw).strip()
    text = text.upper() if upper else text.lower()
    if text not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return text


def language_code(raw: str) -> str | None:
    """A language as given (an ISO code in any case; empty or 'auto' to detect: None), or ValueError."""
    text = raw.strip().lower()
    if text in ("", "auto"):
        return None
    if text not in WHISPER_LANGUAGES:
        raise ValueError(f"unknown language code {raw!r}")
    return text


def _parse_language(name: str, raw: Any) -> str | None:
    try:
        return language_code(str(raw))
    except ValueError:
        raise ConfigError(
            f"{name}: unknown language code {raw!r} (use an ISO code such as 'en', or 'auto')"
        ) from None


def _parse_languages(name: str, raw: Any) -> tuple[str, ...] | None:
    """A set of language codes, sorted (so en,de and de,en are one setting); empty or auto: any."""
    items = [str(x) for x in raw] if isinstance(raw, list | tuple) else str(raw).split(",")
    codes: set[str] = set()
    for item in items:
        code = _parse_language(name, item)
        if code is not None:
            codes.add(code)
    return tuple(sorted(codes)) or None


def _parse_threshold(name: str, raw: Any) -> float | None:
    text = str(raw).strip().lower()
    if text in ("", "none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: expected seconds or 'none', got {raw!r}") from None
    if not 0 < value <= MAX_THRESHOLD_S:  # also refuses nan and inf
        raise ConfigError(f"{name}: must be above 0 and at most {MAX_THRESHOLD_S:g} seconds, got {value}")
    return value


def _optional_count(name: str, raw: Any) -> int | None:
    """A speaker count, or unset ('' / 'auto' / 'none')."""
    if str(raw).strip().lower() in ("", "auto", "none"):
        return None
    return _parse_int(name, raw, 1, MAX_SPEAKERS)


def _optional_text(name: str, raw: Any) -> str | None:
    return str(raw).strip() or None


def _non_empty(name: str, raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        raise ConfigError(f"{name}: must not be empty")
    return text


Parser = Callable[[str, Any], Any]
"""(label, raw value) -> value; raises ConfigError naming the label (the flag or the variable)."""


@dataclass(frozen=True)
class Spec:
    """How a setting is read and what it affects: the metadata of each `Settings` field, from which the
    environment table, config-file keys, CLI flags, engine options and fingerprint are all derived."""

    env: str  # its environment variable, also accepted as a config-file key besides the field name
    parse: Parser
    help: str | None = None  # the help of its `--flag`; None: no flag (environment or config file only)
    commands: tuple[str, ...] = ()  # the commands that take the flag (bools get --flag/--no-flag)
    choices: tuple[str, ...] | None = None  # also checked by argparse, whose usage line lists them
    # Changes a transcript; a callable gives the value recorded (None: not recorded).
    fingerprint: bool | Callable[[Settings], Any] = False
    decoding: bool = False  # an engine option: `asr.AsrOptions` has a field of the same name
    meta: bool = False  # recorded in each document's meta (as used, from the AsrOptions)


def _choice(env: str, choices: tuple[str, ...], help: str, commands: tuple[str, ...], **kw: Any) -> Spec:
    """A setting with a fixed set of values: its parser and its flag's choices from the one tuple."""
    return Spec(env, lambda n, v: _parse_choice(n, v, choices), help, commands, choices=choices, **kw)


def _setting(default: Any, spec: Spec, *, secret: bool = False) -> Any:
    """A declared `Settings` field; a secret is kept out of repr."""
    return field(default=default, repr=not secret, metadata={"spec": spec})


@dataclass(frozen=True)
class Settings:
    """Every setting, declared once: each field's `Spec` (its metadata) says how it is read and used."""

    root: Path = _setting(
        Path("."),
        Spec(
            "SLOWER_WHISPER_ROOT",
            lambda n, v: Path(_non_empty(n, v)),
            "root folder holding raw_audio/ (env SLOWER_WHISPER_ROOT, default .)",
            COMMANDS,
        ),
    )
    model: str = _setting(
        "large-v3",
        Spec(
            "WHISPER_MODEL",
            _non_empty,
            "size name (tiny.en, base, large-v3, turbo, ...), hub repo id or local "
            "directory (env WHISPER_MODEL, default large-v3)",
            _RUNS,
            fingerprint=True,
        ),
    )
    device: str = _setting(
        "auto",
        Spec(
            "WHISPER_DEVICE",
            lambda n, v: _parse_choice(n, v, DEVICES),
            "auto, cuda or cpu (env WHISPER_DEVICE)",
            _RUNS,
        ),
    )
    # None: float16 on cuda, int8 on cpu. The resolved type is what changes a transcript (and implies device).
    compute_type: str | None = _setting(
        None,
        Spec(
            "WHISPER_COMPUTE_TYPE",
            lambda n, v: _parse_choice(n, v, COMPUTE_TYPES),
            "float16, int8, int8_float16, ... (env WHISPER_COMPUTE_TYPE; "
            "default float16 on cuda, int8 on cpu)",
            _RUNS,
            fingerprint=lambda s: s.resolved_compute_type(),
        ),
    )
    # None: detect.
    language: str | None = _setting(
        None,
        Spec(
            "WHISPER_LANGUAGE",
            _parse_language,
            "ISO code such as en, or auto to detect (env WHISPER_LANGUAGE)",
            _RUNS,
            fingerprint=lambda s: s.language or "auto",
            decoding=True,
        ),
    )
    # With the language detected (auto) on a multilingual model: per speech chunk, so a recording that changes
    # language keeps every part in its own language, or once per file from its first 30 s of speech.
    # Recorded only where it can change a transcript.
    language_detection: str = _setting(
        "chunk",
        _choice(
            "WHISPER_LANGUAGE_DETECTION",
            LANGUAGE_DETECTION,
            "with auto language: chunk (each speech chunk in its own language) or file (detect once) "
            "(env WHISPER_LANGUAGE_DETECTION)",
            _RUNS,
            fingerprint=lambda s: (
                None if s.language is not None or english_only(s.model) else s.language_detection
            ),
            decoding=True,
        ),
    )
    # None: any language. Detection picks among these only (a meeting known to be in English and German).
    languages: tuple[str, ...] | None = _setting(
        None,
        Spec(
            "WHISPER_LANGUAGES",
            _parse_languages,
            "comma-separated ISO codes that auto detection may choose from, such as en,de "
            "(env WHISPER_LANGUAGES; default any)",
            _RUNS,
            fingerprint=lambda s: (
                None if s.languages is None or s.language is not None else ",".join(s.languages)
            ),
            decoding=True,
        ),
    )
    # Chunks per model call; None: unbatched per file, automatic when packing.
    batch_size: int | None = _setting(
        None,
        Spec(
            "BATCH_SIZE",
            _int_in(1, MAX_BATCH_SIZE),
            "> 1 uses batched inference (env BATCH_SIZE)",
            _RUNS,
            fingerprint=lambda s: s.batch_size or 1,  # unset is recorded as 1, as before None existed
            decoding=True,
            meta=True,
        ),
    )
    beam_size: int = _setting(
        5,
        Spec(
            "BEAM_SIZE",
            _int_in(1, MAX_BEAM_SIZE),
            "beam width, 1 = greedy (env BEAM_SIZE)",
            _RUNS,
            fingerprint=True,
            decoding=True,
            meta=True,
        ),
    )
    word_timestamps: bool = _setting(
        True,
        Spec(
            "WHISPER_WORD_TIMESTAMPS",
            _parse_bool,
            "word-level timings (default on)",
            _RUNS,
            fingerprint=True,
            decoding=True,
            meta=True,
        ),
    )
    vad: bool = _setting(
        True,
        Spec(
            "WHISPER_VAD",
            _parse_bool,
            "skip non-speech with voice activity detection (default on)",
            _RUNS,
            fingerprint=True,
            decoding=True,
            meta=True,
        ),
    )
    task: str = _setting(
        "transcribe",
        _choice(
            "WHISPER_TASK",
            TASKS,
            "transcribe, or translate into English (needs a multilingual model; env WHISPER_TASK)",
            _RUNS,
            # Not recorded for "transcribe", so transcripts made before the setting existed stay current.
            fingerprint=lambda s: None if s.task == "transcribe" else s.task,
            decoding=True,
            meta=True,
        ),
    )
    # Speakers are added to a finished transcript (Stage 1's last step), so their settings are not in the
    # transcript's fingerprint: changing them redoes the speakers only (`diarization_fingerprint`).
    diarize: bool = _setting(
        False,
        Spec(
            "ENABLE_DIARIZATION",
            _parse_bool,
            "label who spoke when (env ENABLE_DIARIZATION; offline embedded model by default)",
            _RUNS,
        ),
    )
    num_speakers: int | None = _setting(
        None,
        Spec(
            "DIARIZATION_NUM_SPEAKERS",
            _optional_count,
            f"exact number of speakers, 1-{MAX_SPEAKERS} (env DIARIZATION_NUM_SPEAKERS; default: estimated)",
            _RUNS,
        ),
    )
    min_speakers: int | None = _setting(
        None,
        Spec(
            "DIARIZATION_MIN_SPEAKERS",
            _optional_count,
            "fewest speakers to consider (env DIARIZATION_MIN_SPEAKERS)",
            _RUNS,
        ),
    )
    max_speakers: int | None = _setting(
        None,
        Spec(
            "DIARIZATION_MAX_SPEAKERS",
            _optional_count,
            f"most speakers to consider, at most {MAX_SPEAKERS} (env DIARIZATION_MAX_SPEAKERS)",
            _RUNS,
        ),
    )
    # None: the embedded offline model. Else a pyannote pipeline id or local folder (needs pyannote.audio).
    diarization_model: str | None = _setting(
        None,
        Spec(
            "DIARIZATION_MODEL",
            _optional_text,
            "pyannote pipeline id or folder (needs the pyannote extra and HF_TOKEN; "
            "env DIARIZATION_MODEL, default: the embedded offline model)",
            _RUNS,
        ),
    )
    enrich: bool = _setting(
        False,
        Spec(
            "ENABLE_AUDIO_ENRICHMENT",
            _parse_bool,
            "run Stage 2 enrichment (env ENABLE_AUDIO_ENRICHMENT)",
            _RUNS,
        ),
    )
    # Work across files: packed GPU batches, files in parallel on CPU. In the fingerprint because it may
    # choose the batch size itself.
    throughput: bool = _setting(
        False,
        Spec(
            "SLOWER_WHISPER_THROUGHPUT",
            _parse_bool,
            "work across files: packed GPU batches, or files in parallel on CPU "
            "(env SLOWER_WHISPER_THROUGHPUT)",
            _RUNS,
            fingerprint=True,
        ),
    )
    condition_on_previous_text: bool = _setting(
        False,
        Spec("WHISPER_CONDITION_ON_PREVIOUS_TEXT", _parse_bool, fingerprint=True, decoding=True),
    )
    hallucination_silence_threshold: float | None = _setting(
        2.0,
        Spec("WHISPER_HALLUCINATION_SILENCE_THRESHOLD", _parse_threshold, fingerprint=True, decoding=True),
    )
    prosody: bool = _setting(True, Spec("ENABLE_PROSODY", _parse_bool, "env ENABLE_PROSODY", ("enrich",)))
    emotion: bool = _setting(True, Spec("ENABLE_EMOTION", _parse_bool, "env ENABLE_EMOTION", ("enrich",)))
    emotion_model: str = _setting(DEFAULT_EMOTION_MODEL, Spec("EMOTION_MODEL", _non_empty))
    hf_token: str | None = _setting(None, Spec("HF_TOKEN", lambda n, v: str(v).strip() or None), secret=True)
    hf_home: Path | None = _setting(None, Spec("HF_HOME", lambda n, v: Path(_non_empty(n, v))))
    api_key: str | None = _setting(
        None, Spec("SLOWER_WHISPER_API_KEY", lambda n, v: str(v).strip() or None), secret=True
    )
    max_upload_mb: int = _setting(1024, Spec("SLOWER_WHISPER_MAX_UPLOAD_MB", _int_in(1, MAX_UPLOAD_MB)))
    # Concurrent inference workers in the service.
    workers: int = _setting(2, Spec("SLOWER_WHISPER_WORKERS", _int_in(1, MAX_WORKERS)))
    # Queued requests/jobs before the service answers 429/503.
    queue_size: int = _setting(32, Spec("SLOWER_WHISPER_QUEUE_SIZE", _int_in(1, MAX_QUEUE_SIZE)))
    # Seconds an upload may send nothing before it is abandoned (408).
    upload_idle_timeout: float = _setting(
        30.0, Spec("SLOWER_WHISPER_UPLOAD_IDLE_TIMEOUT", lambda n, v: float(_parse_int(n, v, 1, 3600)))
    )
    # Job callbacks may go to loopback, private, link-local and metadata addresses only when this is on.
    callback_allow_internal: bool = _setting(
        False, Spec("SLOWER_WHISPER_CALLBACK_ALLOW_INTERNAL", _parse_bool)
    )
    # Live sessions on /v1/realtime: how many at once, how long one may last, how long it may stay silent
    # (no message), and how much audio it may send ahead of real time before appends are refused.
    realtime_max_sessions: int = _setting(
        8, Spec("SLOWER_WHISPER_REALTIME_MAX_SESSIONS", _int_in(1, MAX_REALTIME_SESSIONS))
    )
    realtime_max_session_s: float = _setting(
        3600.0,
        Spec(
            "SLOWER_WHISPER_REALTIME_MAX_SESSION_S", lambda n, v: float(_parse_int(n, v, 10, MAX_LEASE_TTL_S))
        ),
    )
    realtime_idle_timeout: float = _setting(
        60.0, Spec("SLOWER_WHISPER_REALTIME_IDLE_TIMEOUT", lambda n, v: float(_parse_int(n, v, 1, 3600)))
    )
    realtime_max_buffer_s: float = _setting(
        30.0, Spec("SLOWER_WHISPER_REALTIME_MAX_BUFFER_S", lambda n, v: float(_parse_int(n, v, 1, 600)))
    )
    # Seconds before a dead worker's claim on a file may be taken over.
    lease_ttl: float = _setting(
        120.0, Spec("SLOWER_WHISPER_LEASE_TTL", lambda n, v: float(_parse_int(n, v, 5, MAX_LEASE_TTL_S)))
    )
    log_level: str = _setting(
        "INFO",
        Spec(
            "LOG_LEVEL",
            lambda n, v: _parse_choice(n, v, LOG_LEVELS, upper=True),
            "DEBUG, INFO, WARNING, ERROR (env LOG_LEVEL)",
            COMMANDS,
        ),
    )
    log_format: str = _setting(
        "text",
        _choice(
            "LOG_FORMAT",
            LOG_FORMATS,
            "env LOG_FORMAT; default text on a terminal",
            COMMANDS,
        ),
    )
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def api_keys(self) -> tuple[str, ...]:
        if not self.api_key:
            return ()
        return tuple(k.strip() for k in self.api_key.split(",") if k.strip())

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if hardware.cuda_available() else "cpu"

    def resolved_compute_type(self) -> str:
        if self.compute_type and self.compute_type not in ("default", "auto"):
            return self.compute_type
        return hardware.auto_compute_type(self.resolved_device())

    def diarization_fields(self) -> dict[str, Any]:
        """What changes the speakers of a transcript: recorded with them, and a change redoes them."""
        return {
            "model": self.diarization_model or "embedded",
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
        }

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that change a transcript: a change in any of them makes old outputs stale."""
        out: dict[str, Any] = {}
        for name, spec in SETTINGS.items():
            if callable(spec.fingerprint):
                value = spec.fingerprint(self)
                if value is not None:  # None: at the value older transcripts were made with; not recorded
                    out[name] = value
            elif spec.fingerprint:
                out[name] = getattr(self, name)
        return out


SETTINGS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in dataclasses.fields(Settings) if f.metadata}
"""Every setting's Spec by field name, in declaration order (`Settings.extra` is not a setting)."""

ENV_VARS: dict[str, str] = {name: spec.env for name, spec in SETTINGS.items()}
"""Every environment variable the code reads for its settings, by field name."""

FLAG_FIELDS = tuple(name for name, spec in SETTINGS.items() if spec.help is not None)
BOOL_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings) if f.type in ("bool", bool))
"""Their flags come in pairs: --vad / --no-vad."""
DECODING_FIELDS = tuple(name for name, spec in SETTINGS.items() if spec.decoding)
DECODING_META_FIELDS = tuple(name for name, spec in SETTINGS.items() if spec.meta)
"""The decoding options each document's meta records: `AsrOptions.meta_fields()` gives their values."""


def flag_name(name: str) -> str:
    """A setting's command-line flag: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


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
        name = key if key in SETTINGS else by_env.get(key)
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
            if name not in SETTINGS:
                raise ConfigError(f"unknown setting {name!r}")
            spec = SETTINGS[name]
            values[name] = spec.parse(flag_name(name) if kind == "flag" else spec.env, raw)
    if "log_format" not in values:
        values["log_format"] = "text" if sys.stderr.isatty() else "json"
    settings = Settings(**values)
    if settings.device == "cuda" and not hardware.cuda_available():
        raise ConfigError("WHISPER_DEVICE: 'cuda' requested but no CUDA device is visible to CTranslate2")
    check_english_only(settings.model, None, settings.language, settings.task, settings.languages)
    check_speaker_counts(settings.num_speakers, settings.min_speakers, settings.max_speakers)
    check_languages(settings)
    return settings


def check_languages(settings: Settings) -> None:
    """WHISPER_LANGUAGES agrees with the model and with a fixed WHISPER_LANGUAGE."""
    allowed = settings.languages
    if allowed is None:
        return
    if settings.language is not None and settings.language not in allowed:
        raise ConfigError(
            f"WHISPER_LANGUAGE={settings.language} is not among WHISPER_LANGUAGES={','.join(allowed)}"
        )


def check_counts_need_diarization(settings: Settings) -> None:
    """Speaker counts only shape a diarization: a batch run given them without one would ignore them."""
    given = [n for n in ("num_speakers", "min_speakers", "max_speakers") if getattr(settings, n) is not None]
    if given and not settings.diarize:
        named = ", ".join(f"{flag_name(n)} ({ENV_VARS[n]})" for n in given)
        raise ConfigError(f"{named}: speaker counts need diarization: add --diarize (ENABLE_DIARIZATION)")


def check_speaker_counts(num: int | None, low: int | None, high: int | None) -> None:
    """The speaker-count constraints agree with each other (each is already within 1..MAX_SPEAKERS)."""
    if low is not None and high is not None and low > high:
        raise ConfigError(f"DIARIZATION_MIN_SPEAKERS ({low}) is above DIARIZATION_MAX_SPEAKERS ({high})")
    if num is not None and ((low is not None and num < low) or (high is not None and num > high)):
        raise ConfigError(
            f"DIARIZATION_NUM_SPEAKERS ({num}) is outside DIARIZATION_MIN_SPEAKERS..DIARIZATION_MAX_SPEAKERS "
            f"({low or 1}..{high or MAX_SPEAKERS})"
        )


def english_only(model: str) -> bool:
    """Whether a model's name says it only knows English (tiny.en, distil-small.en, ...)."""
    return Path(model.rstrip("/")).name.lower().endswith(".en")


_MULTILINGUAL_HINT = "use a multilingual model (base, small, large-v3, turbo, ...)"


def english_only_refusal(
    model: str,
    multilingual: bool | None,
    language: str | None = None,
    task: str = "transcribe",
    allowed: Sequence[str] | None = None,
) -> tuple[str, str] | None:
    """What an English-only model is asked and cannot do, as (the setting, why), or None when it can.

    The one rule for every caller (settings, the loaded model, requests, live sessions): such a model would
    transcribe other speech as English, so it is refused, not guessed at. `multilingual` is the loaded
    model's answer; None judges by the name (`english_only`)."""
    if multilingual if multilingual is not None else not english_only(model):
        return None
    if language not in (None, "en"):
        setting, what = "language", f"transcribe language {language!r}"
    elif task == "translate":
        setting, what = "task", "translate"
    elif allowed is not None and tuple(allowed) != ("en",):
        setting, what = "languages", f"detect {','.join(allowed)}"
    else:
        return None
    return setting, f"model {model!r} is English-only and cannot {what}; {_MULTILINGUAL_HINT}"


def check_english_only(
    model: str,
    multilingual: bool | None,
    language: str | None,
    task: str = "transcribe",
    allowed: Sequence[str] | None = None,
) -> None:
    """`english_only_refusal` as a ConfigError naming the variable (exit 2 from the CLI)."""
    refused = english_only_refusal(model, multilingual, language, task, allowed)
    if refused is not None:
        setting, why = refused
        raise ConfigError(f"{ENV_VARS[setting]}: {why}")


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
        index = _parse_int("--shard", parts[0], 0, MAX_SHARDS - 1)
        count = _parse_int("--shard", parts[1], 1, MAX_SHARDS)
    elif env.get("JOB_COMPLETION_INDEX", "").strip():
        index = _parse_int("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"], 0, MAX_SHARDS - 1)
        raw_count = count_flag if count_flag is not None else env.get("JOB_COMPLETION_COUNT", "").strip()
        if raw_count in ("", None):
            raise ConfigError(
                "JOB_COMPLETION_INDEX is set but the shard count is unknown: "
                "set JOB_COMPLETION_COUNT (the Job's completions) or pass --shard-count"
            )
        count = _parse_int("JOB_COMPLETION_COUNT", raw_count, 1, MAX_SHARDS)
    else:
        return None
    if index >= count:
        raise ConfigError(f"shard index {index} must be below the shard count {count}")
    return index, count
