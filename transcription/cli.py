"""The `slower-whisper` command: parse arguments, call one function, map errors to exit codes.

Exit codes: 0 all done; 1 some inputs failed, the rest done; 2 bad usage or configuration, nothing done.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, logsetup
from .config import (
    BOOL_FIELDS,
    COMMANDS,
    ENV_VARS,
    FLAG_FIELDS,
    SETTINGS,
    ConfigError,
    Settings,
    check_counts_need_diarization,
    flag_name,
    load_settings,
    parse_shard,
)
from .errors import UsageError

if TYPE_CHECKING:
    from .pipeline import RunReport, Strategy

log = logging.getLogger("slower_whisper")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its message short and ours
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, command: str) -> None:
    """`--config` and the flag of every setting `command` takes (`Spec.commands`), as the settings declare
    them; the flags every command takes come first."""
    p.add_argument(
        "--config", type=Path, help="settings file (TOML or JSON); flags and environment override it"
    )
    names = [name for name, spec in SETTINGS.items() if command in spec.commands]
    for name in sorted(names, key=lambda name: SETTINGS[name].commands != COMMANDS):  # stable: declared order
        spec = SETTINGS[name]
        if name in BOOL_FIELDS:
            p.add_argument(
                flag_name(name), action=argparse.BooleanOptionalAction, default=None, help=spec.help
            )
        else:  # the value is parsed and checked by load_settings, which names the flag on error
            choices = list(spec.choices) if spec.choices else None
            p.add_argument(flag_name(name), choices=choices, help=spec.help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slower-whisper", description="Transcripts that also say how things were said.")
    parser.add_argument("--version", action="version", version=f"slower-whisper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("transcribe", help="Stage 1 (and Stage 2 when enabled) over raw_audio/")
    _common(p, "transcribe")
    p.add_argument("--force", action="store_true", help="redo inputs whose outputs are already current")
    p.add_argument("--shard", help="I/N: only this shard of the inputs (default from JOB_COMPLETION_INDEX)")
    p.add_argument("--shard-count", type=int, help="N when the index comes from JOB_COMPLETION_INDEX")

    p = sub.add_parser("enrich", help="Stage 2 alone on existing transcripts (missing or failed features)")
    _common(p, "enrich")

    p = sub.add_parser("watch", help="transcribe new inputs as they arrive (long-running)")
    _common(p, "watch")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between scans (default 5)")

    p = sub.add_parser("serve", help="the HTTP service")
    _common(p, "serve")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback bind without SLOWER_WHISPER_API_KEY",
    )

    p = sub.add_parser("models", help="list, download or locate models")
    _common(p, "models")
    msub = p.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    msub.add_parser("list", help="known models and whether each is available offline")
    d = msub.add_parser("download", help="fetch a model into the cache ahead of time")
    d.add_argument("name")
    d = msub.add_parser("path", help="print where a model lives locally")
    d.add_argument("name")

    p = sub.add_parser("doctor", help="device, libraries, ffmpeg, model cache and effective settings")
    _common(p, "doctor")
    # The doctor's own wording for two settings it checks; they are read like any setting's flag.
    p.add_argument("--model", help="model to check (env WHISPER_MODEL)")
    p.add_argument("--device", help="device to check (env WHISPER_DEVICE)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name, None) is not None}
    return load_settings(flags, args.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except UsageError as exc:  # before logging is set up
        print(f"slower-whisper: {exc.user_message()}", file=sys.stderr)
        return EXIT_USAGE
    logsetup.setup(settings.log_level, settings.log_format)
    try:
        return _dispatch(args, settings)
    except UsageError as exc:  # bad usage or configuration, nothing done
        log.error(exc.user_message())
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("transcribe", "watch"):
        check_counts_need_diarization(settings)
    if args.command == "transcribe":
        return _transcribe(args, settings)
    if args.command == "enrich":
        from .pipeline import install_stop_signals, run_enrich

        stop = threading.Event()
        install_stop_signals(stop)
        return _finished(run_enrich(settings, stop=stop))
    if args.command == "watch":
        from .pipeline import install_stop_signals, watch

        if not 0 < args.interval <= 3600:  # also refuses nan and inf
            raise ConfigError(f"--interval: must be above 0 and at most 3600 seconds, got {args.interval}")
        stop = threading.Event()
        install_stop_signals(stop)
        return watch(settings, stop=stop, interval=args.interval, strategy=_strategy(settings))
    if args.command == "serve":
        from .service import serve

        return serve(settings, args.host, args.port, args.allow_unauthenticated)
    if args.command == "models":
        return _models(args, settings)
    if args.command == "doctor":
        from .doctor import report

        info = report(settings)
        print(json.dumps(info, indent=2) if args.json else _format_doctor(info))
        return EXIT_OK if info["ok"] else EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command}")


def _strategy(settings: Settings) -> Strategy | None:
    """The throughput mode's use of the hardware when it is on; None: one file at a time."""
    if not settings.throughput:
        return None
    from .throughput import strategy

    return strategy(settings)


def _transcribe(args: argparse.Namespace, settings: Settings) -> int:
    from .pipeline import install_stop_signals, run_batch

    shard = parse_shard(args.shard, args.shard_count)
    stop = threading.Event()
    install_stop_signals(stop)
    report = run_batch(settings, force=args.force, shard=shard, stop=stop, strategy=_strategy(settings))
    return _finished(report)


def _finished(report: RunReport) -> int:
    """One `FAILED` line per failed input (and for a report that could not be written); the exit code."""
    for failure in report.failed:
        print(f"FAILED {failure['file']}: {failure['error']}", file=sys.stderr)
    if report.report_error:
        print(f"FAILED run report: {report.report_error}", file=sys.stderr)
    return report.exit_code


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from . import models

    if args.models_command == "list":
        print(f"{'NAME':18s} {'SOURCE':8s} LOCATION")
        for name, repo in models.WHISPER_REPOS.items():
            info = models.locate(name, settings)
            where = str(info.path) if info.path else f"not cached (hub: {repo})"
            print(f"{name:18s} {info.source:8s} {where}")
        from .enrich import emotion_model_status

        print(f"\nemotion: {emotion_model_status(settings)}")
        return EXIT_OK
    if args.models_command == "download":
        if args.name == settings.emotion_model or args.name == "emotion":
            from .enrich import download_emotion_model

            print(download_emotion_model(settings))  # EmotionUnavailable is a UsageError
            return EXIT_OK
        print(models.download(args.name, settings))
        return EXIT_OK
    info = models.locate(args.name, settings)
    if info.path is None or info.source == "missing":
        raise models.ModelError(
            f"model {args.name!r} is not available locally; "
            f"fetch it with: slower-whisper models download {args.name}"
        )
    print(info.path)
    return EXIT_OK


def _format_doctor(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


__all__ = ["main", "build_parser", "ENV_VARS"]

if __name__ == "__main__":
    sys.exit(main())
