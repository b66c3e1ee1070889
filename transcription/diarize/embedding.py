"""Speaker embeddings: the d-vector voice encoder of Resemblyzer 0.1.4 (Resemble AI, Apache-2.0).

The network (3-layer LSTM over 40 mel bands, a linear layer, ReLU, unit norm) and its input (a power mel
spectrogram, 25 ms windows every 10 ms, Slaney mel scale) are rebuilt here, and its weights ship with this
package (`voice_encoder.npz`, the network's tensors from the wheel's `pretrained.pt`; licence and notice in
`voice_encoder.LICENSE`, `voice_encoder.NOTICE`): the resemblyzer package itself would pull librosa and
webrtcvad, which needs a compiler, so installing it cannot be part of one `pip install`.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from transcription.audio import SAMPLE_RATE
from transcription.errors import UsageError

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s: the length the encoder was trained on
WEIGHTS = Path(__file__).with_name("voice_encoder.npz")


class EmbeddingModelMissing(UsageError, RuntimeError):
    """The embedded diarizer cannot run here (torch missing, or a broken install without its weights)."""


def weights_path() -> Path:
    if not WEIGHTS.is_file():
        raise EmbeddingModelMissing(
            f"the embedded diarizer's weights ({WEIGHTS}) are missing: this installation of slower-whisper "
            "is incomplete; reinstall it (pip install --force-reinstall 'slower-whisper[diarize]')"
        )
    return WEIGHTS


@functools.cache
def _mel_filters() -> np.ndarray:
    """Slaney-style mel filterbank (librosa's default), shape (N_MELS, N_FFT // 2 + 1)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        mel = f / (200.0 / 3)
        log_region = f >= 1000.0
        return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        hz = m * (200.0 / 3)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), hz)

    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    fdiff = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    weights = np.zeros((N_MELS, fft_freqs.size))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : N_MELS + 2] - mel_points[:N_MELS]))[:, None]
    return weights.astype(np.float32)


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """Power mel spectrogram (frames, N_MELS) of 16 kHz audio, centred frames as librosa computes them."""
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio, N_FFT // 2)
    n = 1 + (padded.size - N_FFT) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    return (spectrum.astype(np.float32) @ _mel_filters().T).astype(np.float32)


def _normalise_volume(clip: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Raise quiet clips to the level the encoder was trained at (never lowered), as its own code does."""
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) if clip.size else 0.0
    if rms <= 1e-6:
        return clip
    change = target_dbfs - 20 * np.log10(rms)
    return clip * (10 ** (change / 20)) if change > 0 else clip


class VoiceEncoder:
    """The d-vector encoder on CPU or CUDA; thread-safe (one forward pass at a time)."""

    def __init__(self, device: str = "cpu") -> None:
        try:
            import torch
            from torch import nn
        except ImportError:
            raise EmbeddingModelMissing(
                "the embedded diarizer needs torch: pip install 'slower-whisper[diarize]'"
            ) from None

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
                self.linear = nn.Linear(256, 256)

            def forward(self, mels: torch.Tensor) -> torch.Tensor:
                _, (hidden, _) = self.lstm(mels)
                raw = torch.relu(self.linear(hidden[-1]))
                return raw / torch.clamp(torch.norm(raw, dim=1, keepdim=True), min=1e-9)

        with np.load(weights_path()) as stored:
            state = {k: torch.from_numpy(stored[k]) for k in stored.files}
        net = _Net()
        net.load_state_dict(state, strict=True)
        self.device = device
        self.net = net.to(device).eval()
        self._torch = torch
        self._lock = threading.Lock()

    def embed_windows(self, clips: list[np.ndarray], batch: int = 64) -> np.ndarray:
        """Unit-norm embeddings (n, 256) of clips of WINDOW_FRAMES (shorter ones are zero-padded)."""
        if not clips:
            return np.zeros((0, 256), dtype=np.float32)
        length = WINDOW_FRAMES * HOP
        mels = []
        for clip in clips:
            clip = _normalise_volume(np.asarray(clip, dtype=np.float32)[:length])
            if clip.size < length:
                clip = np.pad(clip, (0, length - clip.size))
            mels.append(mel_frames(clip)[:WINDOW_FRAMES])
        out = []
        torch = self._torch
        with self._lock, torch.inference_mode():
            for i in range(0, len(mels), batch):
                x = torch.from_numpy(np.stack(mels[i : i + batch])).to(self.device)
                out.append(self.net(x).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """One unit-norm embedding for a clip of any length: the mean of its 1.6 s windows (hop 0.8 s)."""
        audio = np.asarray(audio, dtype=np.float32)
        length, hop = WINDOW_FRAMES * HOP, WINDOW_FRAMES * HOP // 2
        starts = list(range(0, max(1, audio.size - length + 1), hop)) or [0]
        vectors = self.embed_windows([audio[s : s + length] for s in starts])
        mean = vectors.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-9)).astype(np.float32)
