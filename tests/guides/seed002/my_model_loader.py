# Seed 002's Step 3, `my_model_loader.py`, verbatim, its imports included (the
# `real_time_asr_backend` package gives them). Lint is off so it stays so.
# ruff: noqa

import sys
from real_time_asr_backend.real_time_asr_protocols import ModelLoader, ASRProcessor
from real_time_asr_backend.slimer_whisper_online import OnlineASRProcessor
from .my_custom_asr import MyCustomASR  # Import your custom ASR class from Step 1

class MyCustomASRLoader(ModelLoader):
    """
    Loads the custom ASR model and wraps it in the OnlineASRProcessor.
    """
    def load(self, config: "ASRConfig") -> tuple[ASRProcessor, dict]:
        """
        Contains the specific logic to initialize and return our custom ASR processor.
        """
        print("Using MyCustomASRLoader...")

        # 1. Instantiate your custom ASRBase-compliant model
        my_asr_model = MyCustomASR(
            modelsize=config.model,
            lan=config.lan,
            # Pass any other relevant config args here
        )

        # 2. Wrap it with the standard OnlineASRProcessor
        online_processor = OnlineASRProcessor(
            asr=my_asr_model,
            buffer_trimming=(config.buffer_trimming, int(config.buffer_trimming_sec)),
            min_chunk_sec=config.min_chunk_size,
            logfile=sys.stderr
        )

        # 3. Define any specific metadata for your model
        metadata = {
            "separator": getattr(my_asr_model, "sep", " ")
        }

        # 4. Return the processor and metadata
        return online_processor, metadata
