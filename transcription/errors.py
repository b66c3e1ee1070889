"""The user-facing error hierarchy: what the `slower-whisper` command maps to its exit codes.

Any error deriving from :class:`UsageError` means bad usage or configuration and that nothing was done: the
command shows its message (no traceback) and exits 2. Per-input failures (a damaged file) are not usage
errors: the run records them and goes on.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage or configuration (a setting, a missing model, an unusable root): nothing done, exit 2."""

    def user_message(self) -> str:
        """The line the command prints for this error."""
        return str(self)


__all__ = ["UsageError"]
