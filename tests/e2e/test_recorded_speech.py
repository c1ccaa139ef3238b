"""The real model streamed over recorded speech: nothing lost, nothing doubled, the opening right.

The clips are human speech from registry packages (test_audio/make_recorded_audio.sh).
Each failed through the streaming algorithm in a way espeak-ng never showed:
LibriVox lost its opening "And" (short first passes agreed without it) and JFK's
"ask not" came out "Just not" (heard after 1.4 s of silence).

The words themselves depend on the CPU: CTranslate2 multiplies with Intel MKL
on Intel and with oneDNN elsewhere, and the two round int8 products apart
(app/cpu_info.py). So this test asserts what a broken pipeline changes (audio
lost, a phrase lost, doubled or out of order, a wrong opening), with margins
measured under both backends, not the tuned accuracy goal: "within one point of
offline" is the benchmark's figure (`python -m bench.replay`, bench/results/README.md).
"""

from __future__ import annotations

import pytest

from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.asr.online import normalize_word
from app.settings import Settings
from bench.replay import engine_audio, offline, replay
from bench.stream_latency import doubled_phrases, longest_dropped_run, normalize, word_error_rate
from tests.support.commands import AUDIO

pytestmark = pytest.mark.e2e

# Streamed minus offline errors, in words, at 1 s steps on a 2-core AMD EPYC, each backend forced
# (librivox 71 words, JFK 22, sonnet 108; bench/results/README.md, "Backends"):
#   oneDNN (CT2_USE_MKL=0, AMD's default): 0, 0, 0 (2 vs 2, 0 vs 0, 12 vs 12)
#   MKL (CT2_USE_MKL=1, Intel's default):  0, 0, 3 (2 vs 2, 0 vs 0, 13 vs 10)
#   MKL on issue 23's Intel Xeon, the sonnet: 4 (15 vs 11)
# A backend moves single words at the seams of passes, never a phrase: lost and
# doubled phrases are caught below, so this bound is for damage spread over the
# whole clip (a wrong sample rate, a model that hears noise). Half again the
# worst backend's extra, and at least two words more.
MAX_EXTRA_ERRORS = 6
# The most consecutive reference words the streamed text may leave out. Either
# backend leaves out at most 1, streamed or offline (a word the model folds into
# the next: "ill disposed" as "ill-disposed"); the browser test allows 2 as well.
# Losing a final of three words or more, a phrase said out of order (deleted at
# one place, inserted at another) or a second of read speech cut mid-phrase
# (LibriVox reads 2.9 words a second) fails here.
MAX_DROPPED_RUN = 2


@pytest.fixture(scope="module")
def loader() -> FasterWhisperLoader:
    return FasterWhisperLoader(Settings(_env_file=None))  # type: ignore[call-arg]


def errors(reference: str, hypothesis: str) -> int:
    """Word errors (substitutions, deletions, insertions) against the reference."""
    return round(word_error_rate(reference, hypothesis) * len(normalize(reference).split()))


def check_streamed(reference: str, streamed: str, whole: str, opening: list[str]) -> None:
    """What the streamed finals of one clip must hold, given the same model's offline text."""
    words = [normalize_word(w) for w in streamed.split()]
    # The opening is heard on a buffer with nothing before it: the backends agree on it.
    assert words[: len(opening)] == opening, streamed
    assert longest_dropped_run(reference, streamed) <= MAX_DROPPED_RUN, streamed
    # A final committed twice at a seam ("to be to be"): never seen on any backend.
    assert doubled_phrases(reference, streamed) == [], streamed
    extra = errors(reference, streamed) - errors(reference, whole)
    assert extra <= MAX_EXTRA_ERRORS, f"{extra} more errors than offline: {streamed!r}"


@pytest.mark.parametrize(
    ("clip", "opening"),
    [
        ("librivox_16k.wav", ["and", "mr", "john", "dashwood"]),
        ("jfk_16k.wav", ["and", "so", "my", "fellow", "americans", "ask", "not"]),
        # 53 s of read verse, a pause at every line.
        ("sonnet_16k.wav", ["1", "from", "fairest", "creatures"]),
    ],
)
def test_streamed_finals_of_recorded_speech_lose_and_double_nothing(
    loader: FasterWhisperLoader, clip: str, opening: list[str]
) -> None:
    audio = engine_audio(AUDIO / clip)
    reference = (AUDIO / clip).with_suffix(".txt").read_text()
    streamed = replay(loader, audio, step=1.0)["text"]
    check_streamed(reference, streamed, offline(loader, audio), opening)
