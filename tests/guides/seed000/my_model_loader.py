# Path 1, Step 2: `my_model_loader.py`, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

from asr_interface.core.protocols import ModelLoader, ASRProcessor
from asr_interface.core.config import ASRConfig
from asr_interface.backends.whisper_online_processor import OnlineASRProcessor
from .my_custom_asr import MyCustomASR

class MyCustomASRLoader(ModelLoader):
    """
    Loads your custom ASR backend and wraps it in the OnlineASRProcessor.
    """
    
    def load(self, config: ASRConfig) -> tuple[ASRProcessor, dict]:
        """
        Create and return your custom ASR processor.
        
        Args:
            config: Configuration containing model parameters
            
        Returns:
            Tuple of (processor, metadata)
        """
        print("Using MyCustomASRLoader...")

        # 1. Create your ASR backend
        my_asr_backend = MyCustomASR(
            lan=config.lan,
            modelsize=config.model,
            cache_dir=config.model_cache_dir,
            model_dir=config.model_dir
        )

        # 2. Wrap it with OnlineASRProcessor for real-time processing
        online_processor = OnlineASRProcessor(
            asr=my_asr_backend,
            buffer_trimming=(config.buffer_trimming, int(config.buffer_trimming_sec)),
            min_chunk_sec=config.min_chunk_size
        )

        # 3. Define metadata for your backend
        metadata = {
            "separator": my_asr_backend.sep,
            "model_type": "my_custom",
            "model_size": config.model,
            "language": config.lan,
            "backend": "my_custom_backend"
        }

        return online_processor, metadata
