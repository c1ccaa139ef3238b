"""Streaming over a buffer-at-a-time model: LocalAgreement-2 with buffer trimming.

After Macháček, Dabre and Bojar, "Turning Whisper into Real-Time Transcription
System" (IJCNLP-AACL 2023, ufal/whisper_streaming). The audio buffer is
re-transcribed on every `process_iter`; a word is committed once two
consecutive hypotheses agree on it (the longest common prefix of the last two
hypotheses after the last committed word). Committed audio is trimmed from the
buffer at segment or sentence ends so the buffer stays short.

Changes from the original, each for a failure it showed:

* A segment cut keeps ``trim_keep_sec`` of audio when it can: the words
  after it are decoded with that much audio context, not just the prompt.
* While the session says the engine is busy (`set_busy`), the buffer is
  trimmed at ``busy_trimming_sec``, keeping ``busy_keep_sec``: a pass then
  decodes fewer words again, which is most of its cost.
* A hard cap (``max_buffer_sec``) on the buffer. Segment trimming only cuts at
  the end of a finished segment; when Whisper returns one long segment the
  buffer grew to 25–40 s and each pass took seconds. Past the cap the
  processor commits the hypothesis up to a few seconds before the buffer's
  end and cuts there; audio that yielded no words at all (silence, noise) is
  dropped past the cap, since it was transcribed as nothing.
* `finish` transcribes audio that arrived after the last pass before
  committing the tail, so the last words of a stream are never lost.
* `finish` leaves the processor ready to go on at the end of the stream, so it
  also serves to flush what was heard so far without ending the session.
* A new hypothesis's words are told from committed ones by time, but a word
  that ends well after the committed audio is new even if it starts inside
  it: after a buffer cut, Whisper times the buffer's first word from the cut,
  and the original dropped it (a lost word on a held-out clip).
* Words are compared without case and punctuation when looking for agreement
  (``"dog"`` and ``"dog."`` agree); the newer spelling is committed.
* Two passes agree on a word only if both heard it to its end: a word that
  ends after the older pass's audio ended was cut off there, and the model
  then often hears the same wrong word twice ("twice dur…" read as "by" by
  two passes in a row). Such a word waits one more pass. On
  ``en_long_16k.wav`` WER went 7.95 % → 5.11 % (``python -m bench.replay``).
* Optionally (``first_commit_sec``), the first words of a stream are not
  committed by agreement until two passes that each heard that much audio
  agree: without a prompt, passes over 2–3 s agreed on "When the report
  say" where every pass from 4 s on heard "Whether reports say", and on
  recorded speech (LibriVox) passes up to 4 s dropped the opening "And"
  that every pass from 5 s on heard.
* With a `SpeechTimeline` (voice activity), three more rules:
  - a buffer with no speech in it is not transcribed at all (silence costs
    nothing and yields nothing), and only its last moment is kept;
  - at the end of an utterance (a pause, or the end of the stream), trailing
    silence is cut from what the model hears (Whisper invents "Thank you."
    in it), and words that start after the speech ended are dropped;
  - speech that starts after a long silence (the next utterance after a
    pause) is heard with at most ``LEAD_IN_SEC`` of that silence before it:
    after longer silences the model misheard short utterances;
  - when the speaker pauses (``pause_sec`` of silence), the utterance is
    transcribed once more and committed whole, without waiting for two
    passes to agree, and the buffer restarts after it. Finals come at the
    pause, and each utterance is decoded with its full context, like offline;
  - when that pass stopped short of the utterance (voice activity heard more
    than ``UNHEARD_SPEECH_SEC`` of speech after its last word; tiny.en stopped
    at "But as the" and left out the rest of a line of Sonnet 1), the buffer
    restarts after its last word instead, and the next pass hears the rest;
    `finish` does the same. Words the alignment timed over more than
    ``MAX_WORD_SEC`` (over audio the decoder left out) are first shortened, so
    their times do not cover that speech;
  - when a pass skipped speech at the buffer's start (voice activity heard
    more than ``UNHEARD_SPEECH_SEC`` of it before the pass's first new word;
    tiny.en skipped the first 2.6 s of a 30 s backlog that began in
    mid-sentence), the audio up to that word gets a pass of its own, and its
    words come first;
  - when trimming finds no finished segment to cut at (Whisper returned one
    long segment, common in fast continuous speech), the buffer is cut in the
    widest gap between committed words. Buffers past ~20 s made passes slow
    and the model invent text, which the hard cap then committed.

Pure: numpy arrays in, `TextSpan` out; no threads, clocks, sockets or logging.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

import numpy as np

from app.asr.base import (
    ASRBase,
    Audio,
    RawWord,
    SpeechChange,
    TextSpan,
    TimedWord,
    TranscribeResult,
)
from app.asr.vad import FRAME_SEC, SpeechTimeline
from app.settings import ENGINE_SAMPLE_RATE

# A new hypothesis's words may start this much before the last committed word
# ends (timestamps jitter between passes) and still be considered new.
TIMESTAMP_TOLERANCE_SEC = 0.1
# A word that starts before the last committed word ends but ends this much
# after it is new all the same: no committed audio holds it. After a buffer cut,
# Whisper puts the buffer's first word at the cut ("tickets" at 46.15-47.11 s,
# after "north," was committed up to 46.31 s), and dropping it by its start lost it.
SEAM_END_SLACK_SEC = 0.3
# Only look for a repeated n-gram at the committed/new seam if the new
# hypothesis starts within this long of the last committed word.
SEAM_WINDOW_SEC = 1.0
MAX_SEAM_NGRAM = 5
# Characters of committed text given to the model as its prompt.
PROMPT_CHARS = 200
# Committed words kept for the prompt: the buffer's (≤ 30 s) and plenty before.
HISTORY_WORDS = 400
# When the hard cap forces a cut, this much audio before the buffer's end is
# kept: words there are too fresh to commit without agreement.
FORCED_CUT_KEEP_SEC = 5.0

# Silence the model still hears after the last speech frame: enough for the
# last word's tail, too little for Whisper to invent words in.
END_PAD_SEC = 0.3
# A buffer without speech keeps only this much (a word may be starting).
SILENCE_KEEP_SEC = 0.3
# What the service keeps in the buffer after a segment cut (`trim_keep_sec`, at
# most half of `buffer_trimming_sec`). Cutting at the latest committed segment
# left 3 s before "bring an umbrella", heard then as "ring a umbrella";
# `bench.replay` over five clips: 19 -> 18 word errors (en_16k 10.2 -> 8.2 %,
# en_48k 7.3 -> 4.9 %, en_long one "its" became "it's", recorded speech the same).
TRIM_KEEP_SEC = 6.0
# A word the model times longer than this was stretched by the alignment over
# audio the decoder did not transcribe: a pass over 13 s of Sonnet 1 stopped at
# "But as the" and timed "as" from 9.44 s to 14.62 s, over a whole line. Its end
# is not where the word ends (its start, for the first word of a pass: the
# alignment pulls that one back to the buffer's start); `unstretch` keeps
# `STRETCHED_WORD_SEC` of it at its trusted side, so the audio it covered is
# still heard as new.
MAX_WORD_SEC = 2.0
STRETCHED_WORD_SEC = 0.2
# At a pause, voice activity heard more than this much speech after the last word
# the pass committed: the pass stopped short of the utterance, so the rest is
# heard again instead of being cut away with the utterance.
UNHEARD_SPEECH_SEC = 1.0
# Silence kept before the first speech of a buffer (see `_cut_leading_silence`).
# After 1.4 s of silence tiny.en heard JFK's "ask not" as "Just not"; 0.7-1.0 s
# gave the offline text on all five clips of `bench.replay`, 0.3-0.5 s clipped
# word onsets (en_16k 10.2 % -> 16.3 % WER at 0.5 s) and 1.2 s lost the word again.
LEAD_IN_SEC = 0.8

_PUNCT = re.compile(r"[^\w']+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?。！？؟]['\")\]]*$")


def normalize_word(word: str) -> str:
    """The form two hypotheses are compared in: no case, no punctuation, no spaces."""
    return _PUNCT.sub("", word).casefold()


def join_words(words: Sequence[TimedWord], sep: str) -> str:
    """Join words into text that starts with the separating space (see STREAMING.md)."""
    text = sep.join(w.word for w in words)
    if sep and not text.startswith(sep):
        text = sep + text
    return text


def span_of(words: Sequence[TimedWord], sep: str) -> TextSpan | None:
    """A `TextSpan` covering ``words``, its confidence the mean word probability."""
    if not words:
        return None
    probs = [w.probability for w in words if w.probability is not None]
    confidence = float(np.mean(probs)) if probs else None
    return TextSpan(
        start=words[0].start,
        end=words[-1].end,
        text=join_words(words, sep),
        words=tuple(words),
        confidence=confidence,
    )


def to_timed_words(raw: Iterable[RawWord | tuple[float, ...]], offset: float) -> list[TimedWord]:
    """Backend words (buffer-relative) as `TimedWord`s in stream time."""
    words: list[TimedWord] = []
    for item in raw:
        if isinstance(item, TimedWord):
            word = item
        else:
            start, end, text, *rest = item
            probability = float(rest[0]) if rest and rest[0] is not None else None
            word = TimedWord(float(start), float(end), str(text), probability)
        words.append(word._replace(start=word.start + offset, end=word.end + offset))
    return words


def unstretch(words: Sequence[TimedWord]) -> list[TimedWord]:
    """Shorten words timed over more than `MAX_WORD_SEC` to their trusted side.

    The first word keeps its end, any other its start (see `MAX_WORD_SEC`).
    """
    out = list(words)
    for i, word in enumerate(out):
        if word.end - word.start > MAX_WORD_SEC:
            if i == 0:
                out[i] = word._replace(start=word.end - STRETCHED_WORD_SEC)
            else:
                out[i] = word._replace(end=word.start + STRETCHED_WORD_SEC)
    return out


class HypothesisBuffer:
    """LocalAgreement-2: commit the longest common prefix of the last two hypotheses."""

    def __init__(self, last_committed_time: float = 0.0) -> None:
        self.committed_in_buffer: list[TimedWord] = []
        self.buffer: list[TimedWord] = []  # the previous hypothesis, minus what was committed
        self.new: list[TimedWord] = []
        self.last_committed_time = last_committed_time

    def insert(self, words: Sequence[TimedWord]) -> None:
        """Take a new hypothesis (stream times); drop what was already committed."""
        self.new = self.new_words(words)

    def new_words(self, words: Sequence[TimedWord]) -> list[TimedWord]:
        """The words of a hypothesis after what was already committed (changes nothing)."""
        committed_until = self.last_committed_time
        new = [
            w
            for w in words
            if w.start > committed_until - TIMESTAMP_TOLERANCE_SEC
            or w.end > committed_until + SEAM_END_SLACK_SEC
        ]
        if new and abs(new[0].start - committed_until) < SEAM_WINDOW_SEC:
            # Whisper often repeats the last committed words at the buffer's
            # start; drop the longest n-gram that repeats the committed tail.
            committed = self.committed_in_buffer
            for n in range(min(len(committed), len(new), MAX_SEAM_NGRAM), 0, -1):
                tail = [normalize_word(w.word) for w in committed[-n:]]
                head = [normalize_word(w.word) for w in new[:n]]
                if tail == head:
                    new = new[n:]
                    break
        return new

    def flush(self, heard_until: float = math.inf) -> list[TimedWord]:
        """Commit the agreed prefix of the previous and the new hypothesis.

        ``heard_until``: where the audio of the previous hypothesis ended. Only
        words that end by then can be agreed on: a later one was cut off in that
        pass, and the two passes did not both hear it (see the module docstring).
        """
        commit: list[TimedWord] = []
        while self.new and self.buffer and self.new[0].end <= heard_until:
            if normalize_word(self.new[0].word) != normalize_word(self.buffer[0].word):
                break
            word = self.new.pop(0)
            self.buffer.pop(0)
            commit.append(word)
        self._mark_committed(commit)
        self.buffer = self.new
        self.new = []
        return commit

    def commit_all(self, words: Sequence[TimedWord]) -> list[TimedWord]:
        """Commit ``words`` without agreement (end of stream, or the hard cap)."""
        committed_ids = {id(w) for w in words}
        self.buffer = [w for w in self.buffer if id(w) not in committed_ids]
        commit = list(words)
        self._mark_committed(commit)
        self.buffer = [w for w in self.buffer if w.start >= self.last_committed_time]
        return commit

    def _mark_committed(self, words: list[TimedWord]) -> None:
        """Record a commit; clamp starts so committed words never overlap (times jitter)."""
        for i, word in enumerate(words):
            if word.start < self.last_committed_time:
                start = self.last_committed_time
                words[i] = word._replace(start=start, end=max(word.end, start))
            self.last_committed_time = words[i].end
        self.committed_in_buffer.extend(words)

    def pop_committed(self, time: float) -> None:
        """Forget committed words that end at or before ``time`` (they left the buffer)."""
        self.committed_in_buffer = [w for w in self.committed_in_buffer if w.end > time]


@dataclass(frozen=True)
class ProcessorOptions:
    buffer_trimming: Literal["segment", "sentence"] = "segment"
    buffer_trimming_sec: float = 15.0
    max_buffer_sec: float = 25.0
    # Segment trimming leaves at least this much audio in the buffer when a
    # committed segment end allows it (0: cut at the latest one, as the original).
    trim_keep_sec: float = 0.0
    pause_sec: float = 0.5  # with voice activity: commit the utterance at a pause this long
    # Before anything is committed (no prompt yet), agreement commits only when
    # both agreeing passes heard at least this much audio (0: from the second pass).
    first_commit_sec: float = 0.0
    # While the engine is busy (`OnlineASRProcessor.set_busy`): trim past this long,
    # keeping `busy_keep_sec` (None: trim as when it is not). A shorter buffer is a
    # cheaper pass: fewer tokens decoded again each second.
    busy_trimming_sec: float | None = None
    busy_keep_sec: float = 0.0

    def __post_init__(self) -> None:
        if self.max_buffer_sec <= FORCED_CUT_KEEP_SEC:
            raise ValueError(f"max_buffer_sec must exceed {FORCED_CUT_KEEP_SEC} s")


def guide_options(buffer_trimming: tuple[str, float]) -> ProcessorOptions:
    """whisper_streaming's ``buffer_trimming=(mode, seconds)`` as `ProcessorOptions`.

    The hard buffer cap stays above the trimming length, as the service's own
    loader keeps it (a cap below it would cut before trimming ever could).
    """
    mode, seconds = buffer_trimming
    if mode not in ("segment", "sentence"):
        raise ValueError(f"buffer_trimming mode must be 'segment' or 'sentence', not {mode!r}")
    seconds = float(seconds)
    if not seconds > 0:
        raise ValueError(f"buffer_trimming seconds must be positive, not {seconds!r}")
    cap = max(ProcessorOptions.max_buffer_sec, seconds + 1.0)
    trimming: Literal["segment", "sentence"] = "segment" if mode == "segment" else "sentence"
    return ProcessorOptions(
        buffer_trimming=trimming, buffer_trimming_sec=seconds, max_buffer_sec=cap
    )


class OnlineASRProcessor:
    """Turns an `ASRBase` into a streaming `ASRProcessor` (see the module docstring).

    Two ways to build one: ``OnlineASRProcessor(asr, ProcessorOptions(...), speech)``,
    or the integration guides' (whisper_streaming's) keywords,
    ``OnlineASRProcessor(asr=asr, buffer_trimming=("segment", 15),
    min_chunk_sec=1.0, logfile=sys.stderr)``. ``min_chunk_sec`` does not change
    the processor: the session reads it (as `min_chunk_sec`) to know how much
    audio to gather between passes. ``logfile`` is kept for compatibility; the
    processor writes nothing.
    """

    def __init__(
        self,
        asr: ASRBase,
        options: ProcessorOptions | None = None,
        speech: SpeechTimeline | None = None,
        *,
        buffer_trimming: tuple[str, float] | None = None,
        min_chunk_sec: float | None = None,
        logfile: TextIO | None = None,
    ) -> None:
        if buffer_trimming is not None:
            if options is not None:
                raise ValueError("give either options or buffer_trimming, not both")
            options = guide_options(buffer_trimming)
        if min_chunk_sec is not None and not min_chunk_sec > 0:
            raise ValueError(f"min_chunk_sec must be positive, not {min_chunk_sec!r}")
        self.asr = asr
        self.options = options or ProcessorOptions()
        self.speech = speech  # voice activity over the whole stream, if any
        self.min_chunk_sec = min_chunk_sec
        self.logfile = logfile
        # Voice activity as utterances, for `speech_changes` (kept across `init`: a
        # flush in mid-speech does not end the speaker's utterance).
        self._talking = False
        self._quiet_since: float | None = None  # start of the silence after speech
        self._changes: list[SpeechChange] = []
        self._utterance_ended = False
        self.busy = False  # see `set_busy`
        self.init()

    # -- ASRProcessor protocol ------------------------------------------------

    def init(self, offset: float = 0.0) -> None:
        self.audio_buffer: Audio = np.zeros(0, dtype=np.float32)
        self.buffer_time_offset = offset
        self.hypothesis = HypothesisBuffer(last_committed_time=offset)
        self.committed: list[TimedWord] = []
        self._untranscribed_samples = 0
        self._preview: list[TimedWord] | None = None  # the latest preview pass's new words
        self._heard_until = offset  # where the audio of the last committing pass ended
        self._heard_again_from = -math.inf  # see `_stopped_short`

    def insert_audio_chunk(self, audio: Audio) -> None:
        self.audio_buffer = np.concatenate(
            [self.audio_buffer, audio.astype(np.float32, copy=False)]
        )
        self._untranscribed_samples += len(audio)
        if self.speech is not None:
            scored = len(self.speech.speech)
            self.speech.accept(audio)
            self._track_speech(scored)

    def set_busy(self, busy: bool) -> None:
        """Trim at `ProcessorOptions.busy_trimming_sec` from the next pass on, or not."""
        self.busy = busy

    def speaking(self) -> bool:
        """Whether the buffer holds speech (`SupportsSpeaking`); always, without voice activity."""
        return self.speech is None or (len(self.audio_buffer) > 0 and self._has_speech())

    def process_iter(self) -> TextSpan | None:
        """Transcribe the buffer, commit what two passes agree on, trim the buffer."""
        self._preview = None
        self._utterance_ended = False
        if not len(self.audio_buffer):
            return None
        speech = self.speech
        if speech is not None:
            if not self._has_speech():
                # Words still unconfirmed were heard in audio since cut: keep them.
                committed = self.hypothesis.commit_all(self.hypothesis.buffer)
                self.committed.extend(committed)
                self._skip_silence()
                return span_of(committed, self.asr.sep)
            self._cut_leading_silence()
            if speech.trailing_silence() >= self.options.pause_sec:
                self._utterance_ended = True
                return self._commit_utterance()
        result = self._transcribe()
        self.hypothesis.insert(self._hear_skipped_start(self._words(result)))
        committed = self.hypothesis.flush(self._agreement_horizon())
        self._heard_until = self.buffer_end
        self.committed.extend(committed)
        committed.extend(self._trim(result))
        return span_of(committed, self.asr.sep)

    def preview_iter(self) -> None:
        """Transcribe the buffer for `unconfirmed` only; commits wait for `process_iter`.

        It changes nothing else, so the finals are the same with or without
        previews. In silence or at a pause it does nothing: the next
        `process_iter` skips the silence or commits the utterance.
        """
        self._preview = None
        speech = self.speech
        if not len(self.audio_buffer) or (
            speech is not None
            and (not self._has_speech() or speech.trailing_silence() >= self.options.pause_sec)
        ):
            return
        unheard = self._untranscribed_samples
        self._preview = self.hypothesis.new_words(self._words(self._transcribe()))
        # For `finish`, audio a preview heard is still unheard: only a committing
        # pass decides what the stream said.
        self._untranscribed_samples = unheard

    def finish(self) -> TextSpan | None:
        """Commit everything heard, including audio that came after the last pass.

        The processor then goes on from the end of the audio, so `finish` also
        flushes a stream that continues.
        """
        if self.speech is not None:
            # Only audio the last pass did not hear, and only if it holds speech,
            # needs another pass: a client usually stops after a moment of silence.
            unheard_from = self.buffer_end - self._untranscribed_samples / ENGINE_SAMPLE_RATE
            if self.speech.has_speech(unheard_from + FRAME_SEC, self.buffer_end + FRAME_SEC):
                tail = self._pass_to_speech_end()
            else:
                tail = self.hypothesis.buffer
        elif self._untranscribed_samples and len(self.audio_buffer):
            self.hypothesis.insert(self._words(self._transcribe()))
            tail = self.hypothesis.new
        else:
            tail = self.hypothesis.buffer
        committed = self.hypothesis.commit_all(tail)
        if self.speech is not None:
            committed += self._hear_rest()
        history = [*self.committed, *committed]
        self.init(offset=self.buffer_end)
        self.committed = history  # the prompt context carries on
        return span_of(committed, self.asr.sep)

    # -- utterances (`SupportsUtterances`) ----------------------------------------

    def utterance_ended(self) -> bool:
        """Whether the latest `process_iter` committed an utterance at a pause."""
        return self._utterance_ended

    def speech_changes(self, *, ended: bool = False) -> list[SpeechChange]:
        """Utterances starting and stopping since the last call (none without voice activity).

        An utterance stops after ``pause_sec`` of silence, the pause at which
        `process_iter` commits it whole; ``at`` is where the silence began.
        """
        if ended and self._talking:
            self._talking = False
            at = self._quiet_since
            if at is None:
                at = self.speech.end if self.speech is not None else self.buffer_end
            self._changes.append(SpeechChange("stopped", at))
            self._quiet_since = None
        changes, self._changes = self._changes, []
        return changes

    def _track_speech(self, first: int) -> None:
        """Turn the frames scored from index ``first`` on into utterance starts and stops."""
        assert self.speech is not None
        labels, origin = self.speech.speech, self.speech.origin
        for i in range(first, len(labels)):
            at = origin + i * FRAME_SEC
            if labels[i]:
                self._quiet_since = None
                if not self._talking:
                    self._talking = True
                    self._changes.append(SpeechChange("started", at))
            elif self._talking:
                if self._quiet_since is None:
                    self._quiet_since = at
                if at + FRAME_SEC - self._quiet_since >= self.options.pause_sec:
                    self._talking = False
                    self._changes.append(SpeechChange("stopped", self._quiet_since))
                    self._quiet_since = None

    # -- interim ---------------------------------------------------------------

    def unconfirmed(self) -> TextSpan | None:
        """The latest hypothesis after the committed text (for interim results)."""
        words = self.hypothesis.buffer if self._preview is None else self._preview
        return span_of(words, self.asr.sep)

    @property
    def buffer_end(self) -> float:
        return self.buffer_time_offset + len(self.audio_buffer) / ENGINE_SAMPLE_RATE

    @property
    def buffer_duration(self) -> float:
        return len(self.audio_buffer) / ENGINE_SAMPLE_RATE

    # -- internals ---------------------------------------------------------------

    def _transcribe(self, *, at_end: bool = False, until: float | None = None) -> TranscribeResult:
        """One model pass over the buffer; ``at_end``: without its trailing silence.

        Only at the end of an utterance (a pause, or the end of the stream) is
        the silence after the speech certain; mid-stream, voice activity may
        not have flagged a word that is just starting, and cutting it off lost
        words in the browser test. ``until``: only the buffer's audio before then.
        """
        self._untranscribed_samples = 0
        audio = self.audio_buffer
        speech_end = self._speech_end() if at_end else None
        if speech_end is not None:
            until = speech_end + END_PAD_SEC
        if until is not None:
            heard = round((until - self.buffer_time_offset) * ENGINE_SAMPLE_RATE)
            audio = audio[: max(heard, 0)]
        if not len(audio):
            return {"text": "", "segments": [], "language": ""}
        return self.asr.transcribe(audio, init_prompt=self._prompt())

    def _words(self, result: TranscribeResult, *, at_end: bool = False) -> list[TimedWord]:
        words = unstretch(to_timed_words(self.asr.ts_words(result), self.buffer_time_offset))
        speech_end = self._speech_end() if at_end else None
        if speech_end is not None:  # a word that starts after the speech is invented
            words = [w for w in words if w.start < speech_end]
        return words

    def _hear_skipped_start(self, words: list[TimedWord]) -> list[TimedWord]:
        """``words``, after the words of speech the pass skipped before its first new one.

        Whisper can skip the first seconds of a long buffer that starts in
        mid-sentence (after `finish` flushed a stream in mid-speech and a 30 s
        backlog came at once, a pass began 2.6 s in, and "fix ready, and we
        expect to ship it on Wednesday" was lost). When voice activity heard
        more than `UNHEARD_SPEECH_SEC` of speech between the committed text
        and the first new word, the audio up to that word gets a pass of its own.
        """
        if self.speech is None:
            return words
        new = self.hypothesis.new_words(words)
        if not new:
            return words  # nothing new at all: see `_stopped_short`
        start = max(self.buffer_time_offset, self.hypothesis.last_committed_time)
        until = new[0].start
        if self.speech.speech_seconds(start, until) <= UNHEARD_SPEECH_SEC:
            return words
        earlier = self._words(self._transcribe(until=until + END_PAD_SEC))
        return [
            *(w for w in earlier if w.start < until - TIMESTAMP_TOLERANCE_SEC),
            *(w for w in words if w.start >= until),
        ]

    def _agreement_horizon(self) -> float:
        """Words ending after this cannot be committed by agreement in this pass."""
        if not self.committed and (
            self._heard_until - self.buffer_time_offset < self.options.first_commit_sec
        ):
            return -math.inf  # the first words of a stream: the older pass heard too little
        return self._heard_until

    # -- voice activity ------------------------------------------------------------

    def _has_speech(self) -> bool:
        assert self.speech is not None
        return self.speech.has_speech(self.buffer_time_offset, self.buffer_end)

    def _speech_end(self) -> float | None:
        """End of the last speech in the buffer when silence follows it; else None."""
        if self.speech is None:
            return None
        end = self.speech.last_speech_end()
        if end is None or self.speech.trailing_silence() <= END_PAD_SEC:
            return None
        return end

    def _skip_silence(self) -> None:
        """No speech in the buffer: nothing to transcribe; keep only its last moment."""
        self._untranscribed_samples = 0
        self._cut_at(self.buffer_end - SILENCE_KEEP_SEC)

    def _cut_leading_silence(self) -> None:
        """Keep at most `LEAD_IN_SEC` of silence before the buffer's first speech.

        Only while no unconfirmed word is in the buffer: the model heard no
        word in that silence, so nothing there is lost.
        """
        assert self.speech is not None
        if self.hypothesis.buffer:
            return
        first = self.speech.first_speech_start(self.buffer_time_offset)
        if first is not None and first - self.buffer_time_offset > LEAD_IN_SEC:
            self._cut_at(first - LEAD_IN_SEC)

    def _commit_utterance(self) -> TextSpan | None:
        """A pause: transcribe the utterance once more and commit all of it."""
        committed = self.hypothesis.commit_all(self._pass_to_speech_end())
        self.hypothesis.buffer = []
        self.committed.extend(committed)
        if self._stopped_short():  # keep the rest for the next pass
            cut = self.hypothesis.last_committed_time
        else:
            cut = max(self.hypothesis.last_committed_time, self._speech_end() or -math.inf)
        self._cut_at(min(cut, self.buffer_end))
        return span_of(committed, self.asr.sep)

    def _stopped_short(self) -> bool:
        """Speech after the last committed word that no pass from there has heard yet.

        Voice activity heard more than `UNHEARD_SPEECH_SEC` of speech after it.
        Once per committed point: a second pass from the same word that hears
        nothing more means the model hears no words there (a laugh, a cough).
        """
        assert self.speech is not None
        heard = self.hypothesis.last_committed_time
        end = self.speech.last_speech_end()
        if end is None or end - heard <= UNHEARD_SPEECH_SEC or heard <= self._heard_again_from:
            return False
        self._heard_again_from = heard
        return True

    def _hear_rest(self) -> list[TimedWord]:
        """End of stream: passes from the last committed word while the last stopped short."""
        more: list[TimedWord] = []
        while self._stopped_short():
            self._cut_at(self.hypothesis.last_committed_time)
            more += self.hypothesis.commit_all(self._pass_to_speech_end())
        return more

    def _pass_to_speech_end(self) -> list[TimedWord]:
        """A pass without the buffer's trailing silence; its words after the committed ones."""
        words = self._words(self._transcribe(at_end=True), at_end=True)
        self.hypothesis.insert(self._hear_skipped_start(words))
        return self.hypothesis.new

    def _prompt(self) -> str:
        """Committed text that has left the buffer, as context for the model."""
        if len(self.committed) > 2 * HISTORY_WORDS:  # memory stays flat on endless streams
            del self.committed[:-HISTORY_WORDS]
        before = [w for w in self.committed if w.end <= self.buffer_time_offset]
        return join_words(before, self.asr.sep).strip()[-PROMPT_CHARS:]

    def _trim(self, result: TranscribeResult) -> list[TimedWord]:
        """Cut committed audio from the buffer; enforce the hard cap. Returns forced commits."""
        opts = self.options
        trimming_sec, keep_sec = self._trimming()
        if self.buffer_duration > trimming_sec:
            if opts.buffer_trimming == "sentence":
                self._cut_at_sentence()
            else:
                self._cut_at_segment(result, keep_sec)
            if self.speech is not None and self.buffer_duration > trimming_sec:
                # Whisper gave one long segment (or no sentence ended): cut after the
                # last committed word instead of letting the buffer grow to the cap,
                # where passes get slow and the model starts to invent text.
                self._cut_between_words()
        if self.buffer_duration > opts.max_buffer_sec:
            return self._force_cut()
        return []

    def _trimming(self) -> tuple[float, float]:
        """The buffer length to trim past, and the audio a segment cut keeps, for now."""
        opts = self.options
        if self.busy and opts.busy_trimming_sec is not None:
            return opts.busy_trimming_sec, opts.busy_keep_sec
        return opts.buffer_trimming_sec, opts.trim_keep_sec

    def _cut_at_segment(self, result: TranscribeResult, keep_sec: float) -> None:
        """Cut at the latest committed segment end (not the last) that keeps ``keep_sec``."""
        if not self.hypothesis.committed_in_buffer:
            return
        last_committed = self.hypothesis.last_committed_time
        ends = [end + self.buffer_time_offset for end in self.asr.segments_end_ts(result)[:-1]]
        done = [end for end in ends if end <= last_committed]
        roomy = [end for end in done if self.buffer_end - end >= keep_sec]
        if roomy:
            self._cut_at(max(roomy))
        elif done:  # every committed segment ends late: keep as much as they allow
            self._cut_at(min(done))

    def _cut_at_sentence(self) -> None:
        """Cut after the second-to-last committed sentence in the buffer."""
        words = self.hypothesis.committed_in_buffer
        ends = [w.end for w in words if _SENTENCE_END.search(w.word.strip())]
        if len(ends) >= 2:
            self._cut_at(ends[-2])

    def _cut_between_words(self) -> None:
        """Cut in the longest pause voice activity heard in the committed audio.

        Without one, in the widest gap after a committed word. Word times are
        approximate; cutting right at a word's end can leave its last sound in
        the buffer, where the model hears a new word ("others asked" → "other
        masked", "computer. Honest" → "computer. ...onest").
        """
        committed = self.hypothesis.committed_in_buffer
        if self.speech is not None and committed:
            # Where voice activity heard a pause inside the committed audio: the
            # longest one, cut in its middle.
            pause = self.speech.longest_pause(self.buffer_time_offset, committed[-1].end)
            if pause is not None:
                self._cut_at((pause[0] + pause[1]) / 2)
                return
        # Only gaps between two committed words: the gap before the first unconfirmed
        # word may hold speech that hypothesis skipped, and a cut there loses it.
        best: tuple[float, float] | None = None  # (gap, cut time)
        for word, after in itertools.pairwise(committed):
            gap = max(0.0, after.start - word.end)
            if best is None or gap >= best[0]:
                best = (gap, word.end + gap / 2)
        if best is None and committed:
            best = (0.0, committed[-1].end)
        if best is not None:
            self._cut_at(best[1])

    def _force_cut(self) -> list[TimedWord]:
        """The hard cap: keep at most `FORCED_CUT_KEEP_SEC` of unconfirmed audio."""
        forced: list[TimedWord] = []
        keep_from = self.buffer_end - FORCED_CUT_KEEP_SEC
        stale = [w for w in self.hypothesis.buffer if w.end <= keep_from]
        if stale:
            forced = self.hypothesis.commit_all(stale)
            self.committed.extend(forced)
        # Audio before `keep_from` that held no words is dropped (it was
        # transcribed as nothing); never cut through a word still in the hypothesis.
        cut = max(self.hypothesis.last_committed_time, keep_from)
        straddling = [w.start for w in self.hypothesis.buffer if w.start < cut < w.end]
        if straddling:
            cut = min(straddling)
        self._cut_at(cut)
        return forced

    def _cut_at(self, time: float) -> None:
        if time <= self.buffer_time_offset:
            return
        self.hypothesis.pop_committed(time)
        cut_samples = round((time - self.buffer_time_offset) * ENGINE_SAMPLE_RATE)
        self.audio_buffer = self.audio_buffer[cut_samples:]
        self.buffer_time_offset = time
        if self.speech is not None:
            self.speech.forget_before(time)
