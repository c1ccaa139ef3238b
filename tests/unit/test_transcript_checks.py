"""The transcript checks the model tests rest on: they must see a broken pipeline's marks
(a final said twice, a phrase lost) and not a misheard word."""

from __future__ import annotations

from bench.stream_latency import doubled_phrases, longest_dropped_run

REFERENCE = "but thou contracted to thine own bright eyes feeds thy light's flame to thy sweet self"


def test_a_final_committed_twice_is_a_doubled_phrase() -> None:
    assert doubled_phrases("to be or not", "to be to be or not") == ["to be"]
    # The second pass heard the doubled words a little differently.
    said = "we have leisure to consider sure to consider it now"
    assert doubled_phrases("we have leisure to consider it now", said) == ["to consider"]


def test_a_misheard_word_is_not_a_doubled_phrase() -> None:
    # "thine" heard "thy": "to thy" twice, far apart, where the verse says it once.
    misheard = REFERENCE.replace("thine", "thy")
    assert doubled_phrases(REFERENCE, misheard) == []
    # What the reference itself repeats is not doubled either.
    assert doubled_phrases("so so good", "so so good") == []


def test_a_lost_phrase_is_a_dropped_run() -> None:
    lost = REFERENCE.replace("feeds thy light's flame ", "")
    assert longest_dropped_run(REFERENCE, lost) == 4
    assert longest_dropped_run(REFERENCE, REFERENCE.replace("thine", "thy")) == 0
