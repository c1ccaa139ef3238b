# "Testing Your Integration", Unit Testing, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

import pytest
import numpy as np
from asr_interface.core.config import ASRConfig

# Test your ASR backend (Path 1)
def test_my_custom_asr():
    from .my_custom_asr import MyCustomASR
    
    # Test initialization
    asr = MyCustomASR("en", "tiny")
    assert asr.original_language == "en"
    
    # Test transcription
    audio = np.random.randn(16000)  # 1 second of audio
    result = asr.transcribe(audio)
    assert "segments" in result
    assert "text" in result
    
    # Test word extraction
    words = asr.ts_words(result)
    assert isinstance(words, list)
    if words:
        assert len(words[0]) == 3  # (start, end, word)
    
    # Test segment extraction
    segments = asr.segments_end_ts(result)
    assert isinstance(segments, list)

# Test your model loader
def test_my_model_loader():
    from .my_model_loader import MyCustomASRLoader
    
    loader = MyCustomASRLoader()
    config = ASRConfig(
        model="tiny",
        lan="en",
        backend="my_custom_backend"
    )
    
    processor, metadata = loader.load(config)
    assert processor is not None
    assert "separator" in metadata
    assert metadata["model_type"] == "my_custom"

# Test your custom engine (Path 2)
def test_my_custom_engine():
    from .my_custom_engine import MyCustomRealTimeEngine
    
    engine = MyCustomRealTimeEngine("/path/to/model", "en")
    engine.init()
    
    # Test audio insertion
    audio = np.random.randn(16000)
    engine.insert_audio_chunk(audio)
    
    # Test processing
    result = engine.process_iter()
    # Assert based on your expected behavior
