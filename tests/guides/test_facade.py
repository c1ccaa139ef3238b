"""The guides' import paths are the service's own objects, with the guides' conventions."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import pytest

import asr_interface.backends.registry as guide_registry
from app.asr import base, online, registry
from app.asr.base import (
    ASRModelBase,
    EngineInfo,
    EngineRequest,
    StreamingOptions,
    TextSpan,
    as_text_span,
)
from app.asr.online import OnlineASRProcessor, ProcessorOptions
from app.asr.registry import GuideLoader, Registry, SeparatedProcessor
from app.errors import BackendFailure
from app.main import create_app
from app.settings import Settings
from asr_interface.backends.whisper_online_processor import (
    OnlineASRProcessor as GuideOnlineASRProcessor,
)
from asr_interface.core.config import ASRConfig
from asr_interface.core.protocols import ASRBase, ASRProcessor, ModelLoader
from asr_interface.web.server import create_app as guide_create_app
from tests.guides.audio import words_audio
from tests.guides.seed002.my_custom_asr import MyCustomASR
from tests.support.scripted import CountingLoader, CountingProcessor
from tests.unit.scripted import ScriptedASR


def settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)


def test_the_guides_paths_are_the_services_objects() -> None:
    assert ASRBase is ASRModelBase
    assert ASRProcessor is base.ASRProcessor and ModelLoader is base.ModelLoader
    assert ASRConfig is base.ASRConfig
    assert GuideOnlineASRProcessor is online.OnlineASRProcessor
    assert guide_create_app is create_app
    assert guide_registry.register_loader is registry.register_loader
    assert guide_registry.get_loader is registry.get_loader
    assert guide_registry.list_loaders is registry.list_loaders


# --------------------------------------------------------------------------- ASRBase


class Bare(ASRBase):
    """Only `transcribe`: everything else comes from the base class."""

    def transcribe(self, audio: Any, init_prompt: str = "") -> Any:
        return {
            "text": " hi",
            "segments": [{"start": 0.0, "end": 1.0, "text": " hi", "words": []}],
            "language": "en",
        }


def test_asrbase_has_whisper_streamings_constructor_and_defaults() -> None:
    log = io.StringIO()
    asr = Bare("en", "tiny", "/cache", "/models", logfile=log)
    assert asr.original_language == "en"
    assert asr.transcribe_kargs == {}
    assert asr.logfile is log
    assert asr.sep == " "
    assert asr.model is None  # the default load_model loads nothing
    assert Bare("auto").original_language is None  # whisper_streaming: "auto" detects
    assert Bare("de").logfile is sys.stderr
    asr.use_vad()
    assert asr.transcribe_kargs == {"vad_filter": True}
    result = asr.transcribe(np.zeros(10, np.float32))
    assert asr.segments_end_ts(result) == [1.0] and asr.ts_words(result) == []


def test_load_model_is_called_with_the_constructors_arguments() -> None:
    seen: list[tuple[Any, ...]] = []

    class Loads(Bare):
        def load_model(self, modelsize=None, cache_dir=None, model_dir=None):  # type: ignore[no-untyped-def]
            seen.append((modelsize, cache_dir, model_dir))
            return "the model"

    assert Loads("en", "small", "/c", "/m").model == "the model"
    assert seen == [("small", "/c", "/m")]


def test_transcribe_must_be_implemented_and_says_so() -> None:
    with pytest.raises(NotImplementedError, match="ASRModelBase must implement transcribe"):
        ASRModelBase("en").transcribe(np.zeros(1, np.float32))


def test_the_protocol_still_holds_with_and_without_the_base_class() -> None:
    assert isinstance(Bare("en"), base.ASRBase)
    assert isinstance(MyCustomASR("tiny", "en"), base.ASRBase)
    # A model that does not inherit (the test suite's scripted one) serves as before.
    scripted = ScriptedASR(lambda call: [])
    assert not isinstance(scripted, ASRModelBase)
    assert isinstance(scripted, base.ASRBase)
    OnlineASRProcessor(scripted).process_iter()


# --------------------------------------------------------------------------- ASRConfig


def test_asrconfig_has_the_guides_fields_and_defaults() -> None:
    config = ASRConfig(model="tiny", lan="en", backend="my_custom_backend")
    assert config.model_dump() == {
        "model": "tiny",
        "lan": "en",
        "task": "transcribe",
        "backend": "my_custom_backend",
        "min_chunk_size": 1.0,
        "buffer_trimming": "segment",
        "buffer_trimming_sec": 10.0,
        "model_cache_dir": None,
        "model_dir": None,
        "vac": False,
        "vad": False,
    }
    assert ASRConfig(model="x").lan == "auto"


def test_asrconfig_can_be_extended_as_seed_001_does() -> None:
    from pydantic import Field

    class ExtendedASRConfig(ASRConfig):
        device: str = Field(default="cpu", description="Device to run model on")

    assert ExtendedASRConfig(model="m", device="cuda").device == "cuda"


def test_our_request_answers_to_the_guides_names() -> None:
    request = EngineRequest(backend="b", model="tiny", language="ar", language_code="ar-EG")
    assert (request.lan, request.model, request.task) == ("ar", "tiny", "transcribe")
    assert request.min_chunk_size == 1.0 and request.buffer_trimming == "segment"
    assert request.buffer_trimming_sec == 10.0
    assert request.model_cache_dir is None and request.model_dir is None
    assert request.vac is False and request.vad is False
    tuned = EngineRequest(
        backend="b",
        model="",
        language=None,
        language_code="xx-YY",
        options=StreamingOptions(0.5, "sentence", 12.0),
    )
    assert tuned.lan == "xx-YY"  # not a Whisper language: the tag as the client sent it
    assert (tuned.min_chunk_size, tuned.buffer_trimming, tuned.buffer_trimming_sec) == (
        0.5,
        "sentence",
        12.0,
    )


# --------------------------------------------------------------------------- OnlineASRProcessor


def test_online_processor_takes_the_guides_keywords() -> None:
    asr = MyCustomASR("tiny", "en")
    log = io.StringIO()
    processor = OnlineASRProcessor(
        asr=asr, buffer_trimming=("sentence", 12), min_chunk_sec=0.5, logfile=log
    )
    assert processor.options.buffer_trimming == "sentence"
    assert processor.options.buffer_trimming_sec == 12.0
    assert processor.options.max_buffer_sec > 12.0
    assert processor.min_chunk_sec == 0.5 and processor.logfile is log
    long = OnlineASRProcessor(asr=asr, buffer_trimming=("segment", 28))
    assert long.options.max_buffer_sec > 28.0  # the cap stays above the trimming length
    ours = OnlineASRProcessor(asr, ProcessorOptions(buffer_trimming_sec=9.0))
    assert ours.options.buffer_trimming_sec == 9.0 and ours.min_chunk_sec is None
    assert log.getvalue() == ""  # the processor writes nothing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_trimming": ("words", 10)}, "'segment' or 'sentence'"),
        ({"buffer_trimming": ("segment", 0)}, "positive"),
        ({"min_chunk_sec": 0.0}, "positive"),
        ({"buffer_trimming": ("segment", 10), "options": ProcessorOptions()}, "not both"),
    ],
)
def test_online_processor_refuses_bad_guide_keywords(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OnlineASRProcessor(asr=MyCustomASR("tiny", "en"), **kwargs)


def test_guide_keyword_processor_streams_words() -> None:
    processor = OnlineASRProcessor(
        asr=MyCustomASR("tiny", "en"), buffer_trimming=("segment", 10), min_chunk_sec=1.0
    )
    audio = words_audio([1, 2, 3, 4, 5, 6])
    finals = []
    for start in range(0, len(audio), 8000):
        processor.insert_audio_chunk(audio[start : start + 8000])
        if (start // 8000) % 2:
            finals.append(as_text_span(processor.process_iter()))
    finals.append(as_text_span(processor.finish()))
    text = "".join(span.text for span in finals if span is not None)
    assert text == " w1 w2 w3 w4 w5 w6"


# --------------------------------------------------------------------------- results


def test_whisper_streaming_results_are_accepted() -> None:
    assert as_text_span((None, None, "")) is None
    assert as_text_span(base.NO_RESULT) is None
    assert as_text_span((0, 1, " ")) is None
    assert as_text_span((0, 1.5, "hello")) == TextSpan(0.0, 1.5, "hello")
    with pytest.raises(TypeError, match="without times"):
        as_text_span((None, None, "lost"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the registry


class DictLoader(ModelLoader):
    """A guide-style loader: returns the guides' metadata dict."""

    def __init__(self, metadata: dict[str, Any], processor: Any = None) -> None:
        self.metadata = metadata
        self.processor = processor
        self.requests: list[Any] = []

    def load(self, config: Any) -> Any:
        self.requests.append(config)
        return self.processor or CountingProcessor(), self.metadata


def test_guide_loaders_are_served_with_their_metadata_mapped() -> None:
    reg = Registry(settings(min_chunk_size=0.75, buffer_trimming_sec=12.0), entries={})
    loader = DictLoader({"separator": " ", "model_type": "x", "model_size": "big"})
    reg.register_loader("guide", loader)
    served = reg.get_loader("guide")
    assert isinstance(served, GuideLoader) and served.loader is loader
    request = EngineRequest(backend="guide", model="", language="en", language_code="en-US")
    processor, info = served.load(request)  # type: ignore[union-attr]
    assert info == EngineInfo("guide", "big", min_chunk_sec=0.75)
    assert isinstance(processor, CountingProcessor)  # it has interims: not wrapped
    got = loader.requests[0]
    assert got.buffer_trimming_sec == 12.0 and got.min_chunk_size == 0.75
    assert got.model_cache_dir is not None and got.lan == "en"


def test_model_path_and_processor_step_win_in_the_mapping() -> None:
    class Engine:
        min_chunk_sec = 2.0

        def init(self, offset: float = 0.0) -> None: ...
        def insert_audio_chunk(self, audio: Any) -> None: ...
        def process_iter(self) -> Any:
            return (0.0, 1.0, "one")

        def finish(self) -> Any:
            return None

    loader = DictLoader({"separator": "\n", "model_path": "/m"}, Engine())
    served = GuideLoader("eng", loader, settings())
    request = EngineRequest(backend="eng", model="/m2", language="en")
    processor, info = served.load(request)
    assert info == EngineInfo("eng", "/m", min_chunk_sec=2.0)
    assert isinstance(processor, SeparatedProcessor)
    assert as_text_span(processor.process_iter()) == TextSpan(0.0, 1.0, "\none")
    assert processor.finish() is None


def test_our_own_loaders_are_left_as_they_are() -> None:
    reg = Registry(settings(), entries={})
    loader = CountingLoader()
    reg.register_loader("ours", loader)
    assert reg.get_loader("ours") is loader


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ((object(), {}), "lacks the ASRProcessor methods"),
        ((CountingProcessor(), "meta"), "str metadata"),
    ],
)
def test_a_guide_loader_returning_the_wrong_things_is_named(
    returned: tuple[Any, Any], message: str
) -> None:
    class Wrong(ModelLoader):
        def load(self, config: Any) -> Any:
            return returned

    with pytest.raises(BackendFailure, match=f"Backend 'wrong' .*{message}"):
        GuideLoader("wrong", Wrong(), settings()).load(EngineRequest("wrong", "", "en"))


def test_describe_and_other_attributes_pass_through() -> None:
    class Described(DictLoader):
        def describe(self) -> dict[str, Any]:
            return {"usable": False, "reason": "not today"}

    reg = Registry(settings(), entries={})
    reg.register_loader("d", Described({}))
    assert reg.describe("d") == {"usable": False, "reason": "not today"}
    served = reg.get_loader("d")
    assert served.metadata == {}  # type: ignore[union-attr]
    with pytest.raises(AttributeError):
        served.no_such_thing  # type: ignore[union-attr]  # noqa: B018
