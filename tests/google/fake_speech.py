"""A local stand-in for Google's Speech service: a real gRPC server on 127.0.0.1.

It implements ``google.cloud.speech.v1.Speech/StreamingRecognize`` with the
message classes that ship inside ``google-cloud-speech`` (their protobuf form,
``cloud_speech.StreamingRecognizeRequest.pb()``), so the real ``SpeechClient``
talks to it exactly as it talks to Google.

* **Validation like Google's:** the first request carries ``streaming_config``
  and no audio, later ones only audio; audio ≤ 25,600 bytes per request;
  LINEAR16 at 8000–48000 Hz; a known model; a language not in
  ``rejected_languages``. Anything else: ``INVALID_ARGUMENT``.
* **Deterministic recognition** from the audio itself: one word per
  ``word_sec`` of audio, named ``s<value of its first sample>``, a final every
  ``words_per_final`` words (with ``result_end_time`` and word offsets when
  asked), an interim with stability after each request that adds a word. At
  half-close, a last final covers everything left, a partial word included.
  Streaming audio whose samples count 100 ms blocks (`ramp`) gives words
  ``s0 s5 s10…`` at 0, 0.5, 1.0… s whatever the bridge does, as long as it
  neither loses nor repeats audio and keeps times continuous.
* **Shrinkable limits:** stream duration in audio seconds (``OUT_OF_RANGE:
  Exceeded maximum allowed stream duration``), idle timeout (``OUT_OF_RANGE:
  Audio Timeout Error``), HTTP/2 streams per connection.
* **Faults** for the next streams: any status after N audio chunks.
* **Records** every stream: config, chunk sizes, audio bytes, arrival times
  (``time.monotonic_ns``), responses, and how it ended.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from google.cloud.speech_v1.types import cloud_speech

SERVICE = "google.cloud.speech.v1.Speech"
RequestPb: Any = cloud_speech.StreamingRecognizeRequest.pb()
ResponsePb: Any = cloud_speech.StreamingRecognizeResponse.pb()
LINEAR16 = cloud_speech.RecognitionConfig.AudioEncoding.LINEAR16.value
GOOGLE_MAX_AUDIO_BYTES = 25_600  # "25 KB" per streaming request (Google's quotas page)
KNOWN_MODELS = frozenset(
    {"", "default", "latest_long", "latest_short", "command_and_search", "phone_call", "video"}
)
BLOCK_SEC = 0.1


def ramp(seconds: float, rate: int, start_block: int = 0) -> bytes:
    """LINEAR16 audio whose samples hold the index of their 100 ms block (a clock in the signal)."""
    per_block = round(rate * BLOCK_SEC)
    blocks = round(seconds / BLOCK_SEC)
    values = np.arange(start_block, start_block + blocks, dtype=np.int16)
    return np.repeat(values, per_block).astype("<i2").tobytes()


@dataclass(frozen=True)
class Fault:
    """End the stream with ``code`` once it has received ``after_chunks`` audio requests.

    With a ``gate``, the fault waits (the stream reads nothing more) until the test
    sets it: the test decides when the failure happens.
    """

    code: grpc.StatusCode
    after_chunks: int = 0
    details: str = "injected fault"
    gate: threading.Event | None = None

    def fire(self) -> _Abort:
        if self.gate is not None:
            self.gate.wait(10.0)
        return _Abort(self.code, self.details)


@dataclass
class Script:
    """How the fake recognises."""

    word_sec: float = 0.5
    words_per_final: int = 2
    finals: bool = True  # False: finalise only at half-close (speech Google never ends)
    stamp: bool = False  # append " @<monotonic_ns>" to each response (latency bench)


@dataclass
class Limits:
    max_stream_sec: float = 305.0  # of audio per stream
    idle_timeout_sec: float = 10.0  # without a request
    max_audio_bytes: int = GOOGLE_MAX_AUDIO_BYTES


@dataclass
class StreamRecord:
    """What one ``StreamingRecognize`` call received and how it ended."""

    index: int
    config: Any = None  # the RecognitionConfig (protobuf)
    interim_results: bool = False
    chunk_sizes: list[int] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[int, int]] = field(default_factory=list)  # (bytes so far, ns)
    responses: list[Any] = field(default_factory=list)
    status: str = "open"  # "ok", "cancelled", or the status it was ended with
    half_closed: bool = False
    cancelled: bool = False

    @property
    def seconds(self) -> float:
        rate = self.config.sample_rate_hertz if self.config is not None else 16_000
        return len(self.audio) / 2 / rate


class _End:
    """End of a stream's requests (half-close, or cancel)."""


_END = _End()


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Recognition:
    """Deterministic results from one stream's audio."""

    def __init__(self, script: Script, rate: int, interim: bool, words: bool) -> None:
        self.script = script
        self.rate = rate
        self.interim = interim
        self.words = words
        self.word_samples = max(1, round(script.word_sec * rate))
        self.total = 0  # samples heard
        self.firsts: list[int] = []  # the first sample of each word (its name)
        self.done = 0  # words already in finals
        self.last_interim = ""

    def feed(self, data: bytes) -> list[Any]:
        samples = np.frombuffer(data, dtype="<i2")
        # Keep only what names words: the samples where words start (O(words), not O(audio)).
        first = -(-self.total // self.word_samples) * self.word_samples - self.total
        self.firsts.extend(int(v) for v in samples[first :: self.word_samples])
        self.total += len(samples)
        complete = self.total // self.word_samples
        out = []
        per_final = self.script.words_per_final
        while self.script.finals and complete - self.done >= per_final:
            out.append(self._final(range(self.done, self.done + per_final)))
            self.done += per_final
        if self.interim and complete > self.done:
            names = [self._name(k) for k in range(self.done, complete)]
            if " ".join(names) != self.last_interim:
                self.last_interim = " ".join(names)
                out.append(self._interim(names, complete * self.script.word_sec))
        return out

    def finish(self) -> list[Any]:
        if self.total <= self.done * self.word_samples:
            return []
        last = -(-self.total // self.word_samples)  # words, a partial one included
        final = self._final(range(self.done, last), end_sample=self.total)
        self.done = last
        return [final]

    def _name(self, k: int) -> str:
        return f"s{self.firsts[k]}"

    def _final(self, ks: range, end_sample: int | None = None) -> Any:
        response = ResponsePb()
        result = response.results.add()
        result.is_final = True
        end = (ks[-1] + 1) * self.word_samples if end_sample is None else end_sample
        result.result_end_time.FromNanoseconds(round(end / self.rate * 1e9))
        best = result.alternatives.add()
        best.transcript = " ".join(self._name(k) for k in ks)
        best.confidence = 0.9
        if self.words:
            for k in ks:
                word = best.words.add()
                word.word = self._name(k)
                start = k * self.word_samples / self.rate
                stop = min((k + 1) * self.word_samples, end) / self.rate
                word.start_time.FromNanoseconds(round(start * 1e9))
                word.end_time.FromNanoseconds(round((start + 0.8 * (stop - start)) * 1e9))
        self.last_interim = ""
        return response

    def _interim(self, names: list[str], end_sec: float) -> Any:
        response = ResponsePb()
        # Like Google: a stable head and an unstable last word.
        parts = (
            [(" ".join(names[:-1]), 0.9), (" " + names[-1], 0.1)]
            if len(names) > 1
            else [(names[0], 0.5)]
        )
        for text, stability in parts:
            result = response.results.add()
            result.alternatives.add().transcript = text
            result.stability = stability
            result.result_end_time.FromNanoseconds(round(end_sec * 1e9))
        return response


class FakeSpeechServer:
    """The fake Speech service on ``127.0.0.1:<free port>`` (`endpoint`); a context manager."""

    def __init__(
        self,
        script: Script | None = None,
        limits: Limits | None = None,
        *,
        max_concurrent_streams: int | None = None,
        max_workers: int = 512,
        rejected_languages: frozenset[str] = frozenset({"xx-XX"}),
    ) -> None:
        self.script = script or Script()
        self.limits = limits or Limits()
        self.rejected_languages = rejected_languages
        self.streams: list[StreamRecord] = []
        self.faults: deque[Fault | None] = deque()
        self.active = 0
        self.peak_active = 0
        self._lock = threading.Lock()
        options = []
        if max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", max_concurrent_streams))
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers), options=options)
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                    self._handle,
                    request_deserializer=RequestPb.FromString,
                    response_serializer=ResponsePb.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> FakeSpeechServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> FakeSpeechServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test helpers -----------------------------------------------------------------

    def add_faults(self, *faults: Fault | None) -> None:
        """Faults for the next streams, in order (None: that stream runs normally)."""
        with self._lock:
            self.faults.extend(faults)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # -- the RPC ----------------------------------------------------------------------

    def _handle(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        with self._lock:
            record = StreamRecord(index=len(self.streams))
            self.streams.append(record)
            fault = self.faults.popleft() if self.faults else None
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        reader = threading.Thread(
            target=self._read, args=(requests, inbox, record), daemon=True, name="fake-read"
        )
        reader.start()
        try:
            yield from self._serve(record, inbox, fault)
            record.status = "cancelled" if record.cancelled else "ok"
        except _Abort as exc:
            record.status = exc.code.name
            context.abort(exc.code, exc.details)
        finally:
            if record.status == "open":  # the generator was closed: the client went away
                record.status = "cancelled"
            with self._lock:
                self.active -= 1

    @staticmethod
    def _read(requests: Iterator[Any], inbox: queue.SimpleQueue[Any], record: StreamRecord) -> None:
        received = 0
        try:
            for request in requests:
                if request.audio_content:  # stamped on arrival, before the fake's own queue
                    received += len(request.audio_content)
                    record.arrivals.append((received, time.monotonic_ns()))
                inbox.put(request)
            record.half_closed = True
        except Exception:  # the call was cancelled or ended by the server
            record.cancelled = True
        finally:
            inbox.put(_END)

    def _next(self, inbox: queue.SimpleQueue[Any]) -> Any:
        try:
            return inbox.get(timeout=self.limits.idle_timeout_sec)
        except queue.Empty:
            raise _Abort(
                grpc.StatusCode.OUT_OF_RANGE,
                "Audio Timeout Error: Long duration elapsed without audio. Audio should be "
                "sent close to real time.",
            ) from None

    def _serve(
        self, record: StreamRecord, inbox: queue.SimpleQueue[Any], fault: Fault | None
    ) -> Iterator[Any]:
        first = self._next(inbox)
        if first is _END:
            return
        config = self._check_config(first)
        record.config = config
        record.interim_results = first.streaming_config.interim_results
        if fault is not None and fault.after_chunks == 0:
            raise fault.fire()
        recognition = _Recognition(
            self.script,
            config.sample_rate_hertz,
            record.interim_results,
            config.enable_word_time_offsets,
        )
        limit_bytes = self.limits.max_stream_sec * config.sample_rate_hertz * 2
        while True:
            request = self._next(inbox)
            if request is _END:
                break
            if request.HasField("streaming_config"):
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "streaming_config may only be sent in the first request.",
                )
            data = request.audio_content
            if len(data) > self.limits.max_audio_bytes:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Request audio can be a maximum of {self.limits.max_audio_bytes} bytes.",
                )
            record.chunk_sizes.append(len(data))
            record.audio += data
            if len(record.audio) > limit_bytes:
                raise _Abort(
                    grpc.StatusCode.OUT_OF_RANGE,
                    "Exceeded maximum allowed stream duration of "
                    f"{self.limits.max_stream_sec:g} seconds.",
                )
            if fault is not None and len(record.chunk_sizes) >= fault.after_chunks:
                raise fault.fire()
            for response in recognition.feed(data):
                yield self._sent(record, response)
        if record.cancelled:
            return
        for response in recognition.finish():
            yield self._sent(record, response)

    def _sent(self, record: StreamRecord, response: Any) -> Any:
        if self.script.stamp:
            best = response.results[0].alternatives[0]
            best.transcript += f" @{time.monotonic_ns()}"
        record.responses.append(response)
        return response

    def _check_config(self, first: Any) -> Any:
        if not first.HasField("streaming_config") or first.audio_content:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The first request must carry streaming_config and no audio.",
            )
        config = first.streaming_config.config
        if config.encoding != LINEAR16:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Invalid recognition 'config': bad encoding."
            )
        if not 8000 <= config.sample_rate_hertz <= 48000:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"sample_rate_hertz ({config.sample_rate_hertz}) must be between 8000 and 48000.",
            )
        if not config.language_code or config.language_code in self.rejected_languages:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Invalid recognition 'config': bad language code."
            )
        if config.model not in KNOWN_MODELS:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid recognition 'config': unknown model '{config.model}'.",
            )
        return config
