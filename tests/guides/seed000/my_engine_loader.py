# Path 2, Step 2: the loader, imported in Step 3 as `.my_engine_loader`, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

from asr_interface.core.protocols import ModelLoader, ASRProcessor
from asr_interface.core.config import ASRConfig
from .my_custom_engine import MyCustomRealTimeEngine

class MyEngineLoader(ModelLoader):
    """
    Factory for creating instances of MyCustomRealTimeEngine.
    """
    
    def load(self, config: ASRConfig) -> tuple[ASRProcessor, dict]:
        """
        Create and return your custom real-time engine.
        
        Args:
            config: Configuration containing model parameters
            
        Returns:
            Tuple of (processor, metadata)
        """
        print("Using MyEngineLoader...")

        # Create your custom engine
        my_engine = MyCustomRealTimeEngine(
            model_path=config.model,
            language=config.lan,
            min_chunk_sec=config.min_chunk_size
        )

        # Define metadata
        metadata = {
            "separator": " ",  # Word separator
            "model_type": "custom_engine",
            "model_path": config.model,
            "language": config.lan,
            "backend": "my_custom_engine"
        }

        return my_engine, metadata
