"""What the benchmarks share: the environment of a server or CLI under measurement."""

from __future__ import annotations

import os


def server_env(model: str, device: str) -> dict[str, str]:
    """This process's environment without any slower-whisper setting, then the model and device under test,
    offline, quiet logs, no enrichment."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_", "ENABLE_", "SLOWER_WHISPER_"))
    }
    env.update(
        WHISPER_MODEL=model,
        WHISPER_DEVICE=device,
        HF_HUB_OFFLINE="1",
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
        ENABLE_AUDIO_ENRICHMENT="false",
    )
    return env
