"""`bench.batch_decode`'s items: buffers of the length asked, and its refusal of what it cannot time."""

from __future__ import annotations

import pytest

from bench.batch_decode import BUFFER_SEC, buffers, main


@pytest.mark.parametrize("seconds", [6.0, BUFFER_SEC])
def test_each_item_is_a_different_buffer_of_the_length_asked(seconds: float) -> None:
    items = buffers(4, seconds)
    assert [len(audio) for audio, _ in items] == [int(seconds * 16_000)] * 4
    assert len({audio.tobytes() for audio, _ in items}) == 4  # sessions say different things
    assert all(len(prompt.split()) == 40 for _, prompt in items)


def test_forced_prefixes_are_timed_on_8_s_buffers_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--prefix", "--buffer-sec", "6"])
    assert refused.value.code == 2
    assert "--prefix times 8 s buffers only" in capsys.readouterr().err
