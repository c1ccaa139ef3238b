# Path 2, Step 1: `my_custom_engine.py`, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

import numpy as np
from typing import Optional, Tuple
from asr_interface.core.protocols import ASRProcessor

class MyCustomRealTimeEngine(ASRProcessor):
    """
    Complete custom real-time ASR engine.
    
    This example shows how to implement a custom real-time processor
    from scratch. Replace the placeholder logic with your actual implementation.
    """
    
    def __init__(self, model_path: str, language: str, min_chunk_sec: float = 1.0):
        """
        Initialize your custom engine.
        
        Args:
            model_path: Path to your model
            language: Language code
            min_chunk_sec: Minimum chunk size in seconds
        """
        print(f"Initializing MyCustomRealTimeEngine with model: {model_path}")
        
        # Load your model
        self.model = self._load_model(model_path)
        self.language = language
        self.min_chunk_sec = min_chunk_sec
        self.sampling_rate = 16000
        
        # Internal state
        self._audio_buffer = np.array([], dtype=np.float32)
        self._offset = 0.0
        self._last_processed_time = 0.0
        
    def init(self, offset: float = 0.0):
        """
        Reset state for a new audio stream.
        
        Args:
            offset: Time offset for the new stream
        """
        print("Resetting custom engine state.")
        self._audio_buffer = np.array([], dtype=np.float32)
        self._offset = offset
        self._last_processed_time = offset

    def insert_audio_chunk(self, audio: np.ndarray):
        """
        Add incoming audio to the buffer.
        
        Args:
            audio: Audio chunk as numpy array
        """
        self._audio_buffer = np.append(self._audio_buffer, audio)

    def process_iter(self) -> Optional[Tuple[float, float, str]]:
        """
        Process the audio buffer and return results if available.
        
        Returns:
            Optional[Tuple[float, float, str]]: (start_time, end_time, text) if ready, None otherwise
        """
        # Check if we have enough audio to process
        buffer_duration = len(self._audio_buffer) / self.sampling_rate
        if buffer_duration < self.min_chunk_sec:
            return None
        
        # Example: Process when we have enough audio
        # In practice, you might use VAD, silence detection, or other criteria
        if self._should_process_buffer():
            # Transcribe the current buffer
            transcript = self._transcribe_buffer()
            
            if transcript:
                # Calculate timing
                start_time = self._last_processed_time
                end_time = start_time + buffer_duration
                
                # Clear the buffer
                self._audio_buffer = np.array([], dtype=np.float32)
                self._last_processed_time = end_time
                
                return (start_time, end_time, transcript)
        
        return None

    def finish(self) -> Optional[Tuple[float, float, str]]:
        """
        Process any remaining audio at the end of the stream.
        
        Returns:
            Optional[Tuple[float, float, str]]: Final segment if available
        """
        print("Finishing up...")
        if len(self._audio_buffer) > 0:
            transcript = self._transcribe_buffer()
            if transcript:
                start_time = self._last_processed_time
                end_time = start_time + len(self._audio_buffer) / self.sampling_rate
                return (start_time, end_time, transcript)
        return None
    
    def _load_model(self, model_path: str):
        """
        Load your ASR model.
        
        Args:
            model_path: Path to your model
            
        Returns:
            Loaded model object
        """
        # Example: Load your model here
        # return torch.load(model_path)
        # return AutoModel.from_pretrained(model_path)
        return model_path  # Placeholder
    
    def _should_process_buffer(self) -> bool:
        """
        Decide whether to process the current buffer.
        
        Returns:
            bool: True if buffer should be processed
        """
        # Example: Process every 2 seconds
        buffer_duration = len(self._audio_buffer) / self.sampling_rate
        return buffer_duration >= 2.0
    
    def _transcribe_buffer(self) -> Optional[str]:
        """
        Transcribe the current audio buffer.
        
        Returns:
            Optional[str]: Transcription text or None
        """
        # Example: Mock transcription
        # In practice, call your actual model
        # result = self.model.transcribe(self._audio_buffer)
        # return result.text
        
        # Placeholder: return mock text
        return "Mock transcription from custom engine"
