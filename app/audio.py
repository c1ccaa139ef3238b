"""LINEAR16 audio: frames on the event loop, samples in the recognition thread.

Two halves, one on each side of `app.session.AudioHandoff`:

* `PcmFramer` (event loop): binary frames in, whole little-endian 16-bit
  samples out, as bytes. It keeps an odd trailing byte for the next frame (a
  frame boundary may split a sample) and counts what came in. It never
  touches numpy: numpy lets go of the GIL inside conversions of more than a
  few hundred samples, and with hundreds of threads in the process the event
  loop then waited milliseconds per frame to get it back.
* `PcmDecoder` (recognition thread): those bytes → float32 samples at the
  engine's rate. Rate conversion uses soxr's streaming resampler, which keeps
  its filter state across chunks so chunk boundaries leave no clicks; `flush`
  returns the samples still held in the filter at the end of the stream.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.asr.base import Audio
from app.settings import ENGINE_SAMPLE_RATE

INT16_SCALE = 32768.0
BYTES_PER_SAMPLE = 2


class PcmFramer:
    """Frames of s16le mono PCM in, whole samples out (bytes); counts the input."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._carry = b""
        self.samples_in = 0  # whole input samples framed so far

    @property
    def seconds_in(self) -> float:
        return self.samples_in / self.sample_rate

    @property
    def pending_bytes(self) -> int:
        """Bytes held back for the next frame (0 or 1)."""
        return len(self._carry)

    def frame(self, data: bytes) -> bytes:
        """The whole samples of ``data`` (and of the byte held back before it)."""
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) % BYTES_PER_SAMPLE:
            data, self._carry = data[:-1], data[-1:]
        self.samples_in += len(data) // BYTES_PER_SAMPLE
        return data


class PcmDecoder:
    """Whole s16le samples (bytes) in, float32 samples at the engine's rate out."""

    def __init__(self, sample_rate: int, target_rate: int = ENGINE_SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.target_rate = target_rate
        self._resampler = None
        if sample_rate != target_rate:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32")

    def decode(self, pcm: bytes) -> Audio:
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ValueError("LINEAR16 audio comes in whole 2-byte samples")
        ints: npt.NDArray[np.int16] = np.frombuffer(pcm, dtype="<i2")
        samples = (ints.astype(np.float32) / INT16_SCALE).astype(np.float32, copy=False)
        if self._resampler is None:
            return samples
        out: Audio = self._resampler.resample_chunk(samples)
        return out

    def flush(self) -> Audio:
        """End of stream: the resampler's last samples."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        out: Audio = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return out
