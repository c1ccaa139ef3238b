"""LINEAR16 frames → 16 kHz float32 samples, one stream at a time.

`PcmDecoder` turns binary frames of little-endian 16-bit PCM into samples,
keeping an odd trailing byte for the next frame (a frame boundary may split a
sample). Rate conversion uses soxr's streaming resampler, which keeps its
filter state across chunks so chunk boundaries leave no clicks; `flush`
returns the samples still held in the filter at the end of the stream.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.asr.base import Audio
from app.settings import ENGINE_SAMPLE_RATE

INT16_SCALE = 32768.0


class PcmDecoder:
    """Bytes of s16le mono PCM in, float32 samples at the engine's rate out."""

    def __init__(self, sample_rate: int, target_rate: int = ENGINE_SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self.target_rate = target_rate
        self._carry = b""
        self.samples_in = 0  # input samples decoded so far
        self._resampler = None
        if sample_rate != target_rate:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32")

    @property
    def seconds_in(self) -> float:
        return self.samples_in / self.sample_rate

    @property
    def pending_bytes(self) -> int:
        """Bytes held back for the next frame (0 or 1)."""
        return len(self._carry)

    def decode(self, frame: bytes) -> Audio:
        data = self._carry + frame
        usable = len(data) - (len(data) % 2)
        self._carry = data[usable:]
        pcm: npt.NDArray[np.int16] = np.frombuffer(data[:usable], dtype="<i2")
        self.samples_in += len(pcm)
        samples = (pcm.astype(np.float32) / INT16_SCALE).astype(np.float32, copy=False)
        if self._resampler is None:
            return samples
        out: Audio = self._resampler.resample_chunk(samples)
        return out

    def flush(self) -> Audio:
        """End of stream: the resampler's last samples (an odd byte left is half a sample)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        out: Audio = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return out
