"""What this hardware does: devices, compute types, cores, memory, and the worker and batch sizes that follow.

Every choice that depends on the machine lives here, so the CLI's throughput mode and the service apply one
rule. Settings is imported only for type checking: config.py imports this module, not the other way round.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .asr import Engine
    from .config import Settings

_AUTO_BATCH_GUESS = 16  # packing's batch size when free GPU memory is unknown; also the service's estimate


# ---------------------------------------------------------------- devices and cores


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's CPU limit)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all means CPU
        return False


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


def cuda_free_bytes() -> int | None:
    """Free memory on the first GPU, or None when it cannot be known (torch is optional)."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    except Exception:  # noqa: BLE001 - torch is optional; fall through to nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[0]) << 20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def cpu_threads(device: str, workers: int, *, whole_machine_each: bool = False) -> int:
    """CTranslate2's intra-op threads per worker; 0 lets it choose.

    A batch run keeps every worker busy, so on CPU the cores are divided between them: its threads scale
    poorly on few cores, and separate files in parallel use them better than one file on all of them. The
    service's load comes and goes (`whole_machine_each`): each worker gets every core, so a lone request
    uses the whole machine, and concurrent ones share it (measured in docs/service.md).
    """
    if device != "cpu":
        return 0
    if whole_machine_each:
        return usable_cpus()
    return max(1, usable_cpus() // workers) if workers > 1 else 0


# ---------------------------------------------------------------- batch size


def choose_batch_size(engine: Engine, requested: int | None) -> int:
    """The batch size for packing: `requested` when one was set, else `auto_batch_size`."""
    return requested if requested is not None else auto_batch_size(engine)


def auto_batch_size(engine: Engine) -> int:
    """A batch size for packing when none was set.

    The free device memory over a per-item estimate from the model's shape (beam-search caches of the
    decoder's self- and cross-attention dominate), clamped to 4..32 and rounded down to a power of two.
    """
    free = cuda_free_bytes()
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
    parallel (measured 2.0x the default single-file loop on 2 cores; see docs/BENCHMARKS.md). Packing: one
    worker feeding packed batches. Outside throughput mode: one.
    """
    if not settings.throughput or packs(settings):
        return 1
    return usable_cpus()


def prepare_workers(device: str) -> int:
    """Threads decoding and preparing (VAD, features) ahead of the model in throughput mode.

    On a GPU the model outruns them: a 30 s chunk takes milliseconds there but tens of milliseconds of CPU
    to prepare (../shared/GPU.md: real files reached 1-4% of the engine's ceiling, the time going to that
    work), so every core but one prepares, up to 16. On CPU they compete with the model for the same cores.
    """
    cores = usable_cpus()
    if device == "cpu":
        return max(2, min(4, cores - 1))
    return max(2, min(16, cores - 1))


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
