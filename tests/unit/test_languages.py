"""BCP-47 → Whisper language mapping, and the local backend's language/model checks."""

from __future__ import annotations

import pytest

from app.asr.base import EngineRequest
from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.errors import ConfigError
from app.languages import is_bcp47, to_whisper_language
from app.settings import Settings


@pytest.mark.parametrize(
    ("tag", "whisper"),
    [
        ("en-US", "en"),
        ("ar-EG", "ar"),
        ("EN", "en"),
        ("yue-HK", "yue"),
        ("jv-ID", "jw"),
        ("nb-NO", "no"),
        ("zh-Hans-CN", "zh"),
        ("xx-YY", None),
        ("en_US", None),
        ("english", None),
        ("", None),
    ],
)
def test_to_whisper_language(tag: str, whisper: str | None) -> None:
    assert to_whisper_language(tag) == whisper


def test_is_bcp47() -> None:
    assert is_bcp47("en-US") and is_bcp47("cmn-Hans-CN")
    assert not is_bcp47("en_US") and not is_bcp47("e") and not is_bcp47("en-")
    assert not is_bcp47("en\n") and not is_bcp47("en-US\n")  # `$` matched before a newline
    assert is_bcp47("en-" + "-".join(["abcdefgh"] * 6) + "-x-abcde")  # 64: the bound
    assert not is_bcp47("en-US" * 13)  # well-formed subtags ("-USen"), 65 characters


def request(model: str = "tiny.en", tag: str = "en-US") -> EngineRequest:
    return EngineRequest("faster-whisper", model, to_whisper_language(tag), language_code=tag)


@pytest.mark.parametrize(
    ("req", "code", "field"),
    [
        (request(tag="ar-EG"), "unsupported_language", "language_code"),
        (request(tag="xx-YY"), "unsupported_language", "language_code"),
        (request(model="huge-v9"), "unknown_model", "model"),
    ],
)
def test_local_backend_refuses_what_it_cannot_serve(
    req: EngineRequest, code: str, field: str
) -> None:
    loader = FasterWhisperLoader(Settings(_env_file=None))  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as err:
        loader.check(req)
    assert (err.value.code, err.value.field) == (code, field)
    assert f"'{field}'" in err.value.detail or req.model in err.value.detail


def test_local_backend_accepts_english_variants() -> None:
    loader = FasterWhisperLoader(Settings(_env_file=None))  # type: ignore[call-arg]
    for tag in ("en-US", "en-GB", "en-IN", "en"):
        loader.check(request(tag=tag))
