"""What this machine has and how much of it each part uses: CUDA visibility, compute types, usable cores,
free GPU memory, the torch device, and thread counts.

Plain values in, plain values out: this module imports none of the project's modules but errors.py, so
config.py and asr.py can use it (the policy that needs Settings or the Engine is in sizing.py).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from .errors import UsageError

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
    uses the whole machine, and concurrent ones share it (docs/service.md).
    """
    if device != "cpu":
        return 0
    if whole_machine_each:
        return usable_cpus()
    return max(1, usable_cpus() // workers) if workers > 1 else 0


def prepare_workers(device: str) -> int:
    """Threads decoding and preparing (VAD, features) ahead of the model in throughput mode.

    On a GPU the model outruns them (a chunk takes far less time there than its preparation on the CPU), so
    every core but one prepares, up to 16. On CPU they compete with the model for the same cores.
    """
    cores = usable_cpus()
    if device == "cpu":
        return max(2, min(4, cores - 1))
    return max(2, min(16, cores - 1))


class TorchDeviceError(UsageError, RuntimeError):
    """CUDA was asked for, but torch cannot use it."""


def torch_device(device: str) -> str:
    """The torch device for WHISPER_DEVICE, for every torch model (diarizer, emotion): cpu; auto: cuda when
    torch can use it, else cpu; cuda: cuda, or an error when torch cannot use it (a CPU build of torch, no
    visible GPU), never a silent fall back to the CPU."""
    if device == "cpu":
        return "cpu"
    try:
        import torch

        usable = bool(torch.cuda.is_available())
    except ImportError:
        usable = False
    if usable:
        return "cuda"
    if device == "cuda":
        raise TorchDeviceError(
            "WHISPER_DEVICE is cuda but torch cannot use CUDA (a CPU build, or no GPU visible)"
        )
    return "cpu"


def diarization_workers() -> int:
    """Files diarized at once: CPU work beside the GPU's transcription; on a small CPU one at a time."""
    return max(1, min(4, usable_cpus() // 2))


def live_audio_threads(max_sessions: int) -> int:
    """Threads for the service's live audio processing (resampling, turn detection). Each session processes
    its audio in order, one task at a time, so one per session: none ever waits for another's."""
    return max(1, max_sessions)


def live_decode_threads(packing: bool, max_sessions: int, engine_workers: int) -> int:
    """Threads for the service's live decodes. With packing each only waits on the packer, so one per
    session may wait at once; otherwise each runs the engine, so one per engine worker."""
    return max(1, max_sessions if packing else engine_workers)
