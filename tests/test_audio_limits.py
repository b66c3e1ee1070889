"""The most audio one decode may produce (`audio.Limit`): an input past it is a `TooLong`, known from its
header or, where the header states no length, by stopping the decode at the limit, never after writing the
rest. The default is the most a 16 kHz 16-bit WAV can hold, checked against Python's own `wave`."""

from __future__ import annotations

import struct
import subprocess
import wave
from pathlib import Path

import pytest
from conftest import DATA, run_cli, tiny_env

from transcription import audio

JFK = DATA / "en_read" / "jfk" / "jfk.flac"


def _silence(path: Path, seconds: float, *, stated: bool = True) -> Path:
    """`seconds` of silence as FLAC at 100 Hz (some KB for days of audio). Written through a pipe, FLAC's
    header cannot be completed, so the file states no length."""
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=100:cl=mono",
           "-t", str(seconds), "-c:a", "flac", "-frame_size", "16384", "-f", "flac"]  # fmt: skip
    if stated:
        subprocess.run([*cmd, "-y", str(path)], check=True, timeout=60)
    else:
        with path.open("wb") as fh:
            subprocess.run([*cmd, "pipe:1"], stdout=fh, check=True, timeout=60)
    return path


class _Sink:
    """A seekable file that keeps only its size: lets `wave` write (and patch the header of) 4 GiB."""

    def __init__(self) -> None:
        self.pos = self.size = 0

    def write(self, data: bytes) -> int:
        self.pos += len(data)
        self.size = max(self.size, self.pos)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.size + pos if whence == 2 else self.pos + pos
        return self.pos

    def flush(self) -> None:
        pass


def _write_wav(frames: int) -> int:
    sink = _Sink()
    block = bytes(64 << 20)
    with wave.open(sink, "wb") as out:  # type: ignore[arg-type] - a file-like sink
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(audio.SAMPLE_RATE)
        left = frames * 2
        while left:
            piece = min(left, len(block))
            out.writeframesraw(memoryview(block)[:piece])
            left -= piece
    return sink.size


def test_the_default_limit_is_the_most_frames_a_wav_can_hold() -> None:
    assert audio.WAV_LIMIT.frames == audio.MAX_WAV_FRAMES
    assert _write_wav(audio.MAX_WAV_FRAMES) == 44 + 2 * audio.MAX_WAV_FRAMES  # 4 GiB and 6 bytes
    with pytest.raises(struct.error):  # what a longer upload ended in: a 500 after minutes of decoding
        _write_wav(audio.MAX_WAV_FRAMES + 1)
    assert 37.2 * 3600 < audio.WAV_LIMIT.seconds < 37.3 * 3600


def test_a_file_that_states_a_length_past_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    src = _silence(tmp_path / "38h.flac", 38 * 3600)
    assert src.stat().st_size < 200_000
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(audio.TooLong) as caught:
        audio.normalize(src, out / "38h.wav")
    message = str(caught.value)
    assert "38h.flac states that it lasts 38.00 h, more than the 37.28 h one file may last" in message
    assert "4 GiB" in message and "split" in message
    assert caught.value.limit_s == audio.WAV_LIMIT.seconds
    assert list(out.iterdir()) == []  # not even a temporary file
    with pytest.raises(audio.TooLong):  # a clip held in memory, through the same limit
        audio.decode_clip(src.read_bytes(), "the clip", 10.5)


def test_a_file_that_states_no_length_stops_decoding_at_the_limit(tmp_path: Path) -> None:
    src = _silence(tmp_path / "unstated.flac", 48 * 3600, stated=False)
    out = tmp_path / "out"
    out.mkdir()
    limit = audio.Limit(60 * audio.SAMPLE_RATE, " (the test's)")
    with pytest.raises(audio.TooLong, match=r"^unstated.flac lasts more than the 60 s \(the test's\)$"):
        audio.normalize(src, out / "unstated.wav", limit)
    assert list(out.iterdir()) == []  # the partial WAV is removed
    with pytest.raises(audio.TooLong):
        audio.decode_clip(src.read_bytes(), "the clip", 10.5)


def test_a_file_of_exactly_the_limit_is_kept(tmp_path: Path) -> None:
    src = _silence(tmp_path / "2s.flac", 2, stated=False)
    assert audio.normalize(src, tmp_path / "2s.wav", audio.Limit(2 * audio.SAMPLE_RATE)) == 2.0
    assert audio.WavReader(tmp_path / "2s.wav").frames == 2 * audio.SAMPLE_RATE
    with pytest.raises(audio.TooLong):
        audio.normalize(src, tmp_path / "again.wav", audio.Limit(2 * audio.SAMPLE_RATE - 1))
    assert not (tmp_path / "again.wav").exists()


@pytest.mark.needs_data
@pytest.mark.timeout(300)
def test_the_cli_fails_that_file_with_the_reason_and_goes_on(tmp_path: Path) -> None:
    raw = tmp_path / "raw_audio"
    raw.mkdir()
    _silence(raw / "a-38h.flac", 38 * 3600)
    (raw / "b-jfk.flac").write_bytes(JFK.read_bytes())
    run = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env(), timeout=240)
    assert run.returncode == 1, run.stderr  # one failed input, the rest done
    assert "Traceback" not in run.stderr
    failed = [line for line in run.stderr.splitlines() if line.startswith("FAILED a-38h.flac")]
    assert failed and "more than the 37.28 h" in failed[0] and "split" in failed[0], run.stderr
    assert "country" in (tmp_path / "whisper_json" / "b-jfk.json").read_text()
    assert not list((tmp_path / "input_audio").glob("a-38h*"))


def test_a_length_estimated_from_the_bit_rate_is_not_trusted(tmp_path: Path) -> None:
    """A VBR MP3 written through a pipe has no Xing header: FFmpeg estimates its length from the first
    frames' bit rate, and 20 s of silence then 20 s of noise is stated as about 80 s."""
    src = tmp_path / "vbr.mp3"
    with src.open("wb") as fh:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
             "-f", "lavfi", "-i", "anoisesrc=r=44100:a=0.5", "-filter_complex",
             "[0]atrim=0:20[a];[1]atrim=0:20[b];[a][b]concat=n=2:v=0:a=1", "-c:a", "libmp3lame", "-q:a", "2",
             "-f", "mp3", "pipe:1"],
            stdout=fh, check=True, timeout=60,
        )  # fmt: skip
    import av

    with av.open(str(src)) as container:
        assert container.duration / 1e6 > 60  # what the header is taken to say
    duration = audio.normalize(src, tmp_path / "vbr.wav", audio.Limit(50 * audio.SAMPLE_RATE))
    assert 39.5 < duration < 41
