# "Quick Templates": the ASRBase and ASRProcessor templates, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

from asr_interface.core.protocols import ASRBase

class MyASRBackend(ASRBase):
    sep = " "
    
    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        # Load your model
        pass
    
    def transcribe(self, audio, init_prompt=""):
        # Transcribe audio
        pass
    
    def ts_words(self, result):
        # Extract word timestamps
        pass
    
    def segments_end_ts(self, result):
        # Extract segment timestamps
        pass
    
    def use_vad(self):
        # Enable VAD
        pass

from asr_interface.core.protocols import ASRProcessor

class MyCustomProcessor(ASRProcessor):
    def __init__(self, model_path, language):
        # Initialize
        pass
    
    def init(self, offset=0.0):
        # Reset state
        pass
    
    def insert_audio_chunk(self, audio):
        # Add audio
        pass
    
    def process_iter(self):
        # Process buffer
        pass
    
    def finish(self):
        # Finalize
        pass
