"""slower-whisper: transcripts that also say how things were said."""

__version__ = "0.1.0"
