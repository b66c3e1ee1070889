"""What one transcription asks for beyond the server's settings: read from the form by the routes, run by
work.py, stored in a job's record (as `to_record`'s dict, read back by `from_record`) for the runner."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transcription.config import Settings

from .speaker_options import SpeakerOptions


@dataclass(frozen=True)
class Options:
    """The decoding options of a request's form fields; None falls back to the server's settings."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    enrich: bool | None = None
    word_timestamps: bool = False  # whether the response shows word times

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TranscriptionRequest:
    options: Options = field(default_factory=Options)
    speakers: SpeakerOptions = field(default_factory=SpeakerOptions)
    # The endpoint's task; None (jobs) follows the server's WHISPER_TASK.
    task: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The flat dict a job's record shows as `options` (no `task` when it follows the server)."""
        task = {"task": self.task} if self.task is not None else {}
        return {**self.options.to_dict(), **task, **self.speakers.to_dict()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TranscriptionRequest:
        """From `to_record`'s dict; fields a record written by an older version lacks take their defaults."""
        known = {f.name for f in dataclasses.fields(Options)}
        return cls(
            Options(**{k: v for k, v in record.items() if k in known}),
            SpeakerOptions.from_dict(record),
            record.get("task"),
        )

    def settings_for(self, settings: Settings) -> Settings:
        """The server's settings with this request's diarization fields, and word timings on when the
        response, Stage 2 (rate, pauses) or speakers (segments split by word times) use them: they cost about
        a tenth of a decode otherwise."""
        settings = self.speakers.apply(settings)
        words = self.options.word_timestamps or self.enriches(settings) or settings.diarize
        if words != settings.word_timestamps:
            settings = dataclasses.replace(settings, word_timestamps=words)
        return settings

    def enriches(self, settings: Settings) -> bool:
        """Whether Stage 2 runs: as asked, else as the server's ENABLE_AUDIO_ENRICHMENT says."""
        return settings.enrich if self.options.enrich is None else bool(self.options.enrich)
