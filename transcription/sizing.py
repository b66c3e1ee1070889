"""How the batch run's throughput mode and the service size their work: whether to pack, batch sizes,
engine and preparation workers, requests in flight. Policy from Settings and the loaded Engine over the
machine's facts (hardware.py); both drivers apply the same rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import hardware

if TYPE_CHECKING:
    from .asr import Engine
    from .config import Settings

_AUTO_BATCH_GUESS = 16  # packing's batch size when free GPU memory is unknown; also the service's estimate


# ---------------------------------------------------------------- batch size


def choose_batch_size(engine: Engine, requested: int | None) -> int:
    """The batch size for packing: `requested` when one was set, else `auto_batch_size`."""
    return requested if requested is not None else auto_batch_size(engine)


def auto_batch_size(engine: Engine) -> int:
    """A batch size for packing when none was set.

    The free device memory over a per-item estimate from the model's shape (beam-search caches of the
    decoder's self- and cross-attention dominate), clamped to 4..32 and rounded down to a power of two.
    """
    free = hardware.cuda_free_bytes()
    if free is None:
        return _AUTO_BATCH_GUESS
    dims = _model_dims(engine.path)
    beams = 5
    bytes_per_value = 1 if engine.compute_type.startswith("int8") else 2
    layers, width = dims["decoder_layers"], dims["d_model"]
    cross = 2 * layers * beams * 1500 * width * bytes_per_value
    self_kv = 2 * layers * beams * 448 * width * bytes_per_value
    encoder = 4 * dims["encoder_layers"] * 1500 * width * 2
    per_item = cross + self_kv + encoder
    n = int(free * 0.6 // max(1, per_item))
    n = max(4, min(32, n))
    return 1 << (n.bit_length() - 1)


def _model_dims(model_path: Path) -> dict[str, int]:
    defaults = {"d_model": 1280, "decoder_layers": 32, "encoder_layers": 32}  # large-v3: the safe side
    try:
        cfg = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return defaults
    return {k: int(cfg.get(k, v)) for k, v in defaults.items()}


# ---------------------------------------------------------------- throughput mode: CLI and service


def packs(settings: Settings) -> bool:
    """Whether throughput mode packs chunks of several files (or requests) into shared batches.

    On a GPU always; on CPU only when a batch size above 1 was set, since otherwise files in parallel, one
    per core, use the cores better. The CLI's throughput mode and the service both follow this rule.
    """
    if not settings.throughput:
        return False
    return settings.resolved_device() != "cpu" or (settings.batch_size or 1) > 1


def engine_workers(settings: Settings) -> int:
    """Concurrent transcriptions the batch run loads the engine for.

    Throughput mode on CPU without packing: one worker per usable core, each file on one core, files in
    parallel (faster than one file on every core: docs/BENCHMARKS.md). Packing: one worker feeding packed
    batches. Outside throughput mode: one.
    """
    if not settings.throughput or packs(settings):
        return 1
    return hardware.usable_cpus()


def service_in_flight(settings: Settings) -> int:
    """Requests the service transcribes at once. Packing needs many in flight to fill a batch: while some
    wait for the model, as many again are decoding and preparing, so twice the batch size (twice 16 when
    it is automatic)."""
    if not packs(settings):
        return settings.workers
    return max(settings.workers, 2 * (settings.batch_size or _AUTO_BATCH_GUESS))


def service_engine_workers(settings: Settings) -> int:
    """Concurrent transcriptions the service loads the engine for: with packing one model thread runs every
    batch; otherwise each request worker runs its own."""
    return 1 if packs(settings) else settings.workers
