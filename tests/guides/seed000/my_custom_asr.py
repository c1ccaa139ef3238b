# Path 1, Step 1: `my_custom_asr.py`, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

import numpy as np
from typing import Any, List, Tuple
from asr_interface.core.protocols import ASRBase

class MyCustomASR(ASRBase):
    """
    Your custom ASR backend implementation.
    
    This example shows how to integrate a hypothetical ASR model.
    Replace the placeholder methods with your actual model logic.
    """
    
    sep = " "  # Word separator for your model

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        """
        Load your custom ASR model.
        
        Args:
            modelsize: Model size identifier (e.g., "tiny", "base", "large")
            cache_dir: Directory for caching models
            model_dir: Path to pre-downloaded model directory
        """
        print(f"Loading custom model: {modelsize}")
        
        # Example: Load from Hugging Face
        # from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
        # self.model = AutoModelForSpeechSeq2Seq.from_pretrained(modelsize)
        # self.processor = AutoProcessor.from_pretrained(modelsize)
        
        # Example: Load from local files
        # self.model = torch.load(f"{model_dir}/model.pth")
        
        # For this example, we'll just store the model size
        self.model_size = modelsize
        return self.model_size

    def transcribe(self, audio, init_prompt=""):
        """
        Transcribe audio using your model.
        
        Args:
            audio: Audio data as numpy array (16kHz, float32)
            init_prompt: Initial prompt for the model
            
        Returns:
            dict: Must contain "segments" key with list of segment objects
        """
        # Example: Using transformers
        # inputs = self.processor(audio, sampling_rate=16000, return_tensors="pt")
        # with torch.no_grad():
        #     generated_ids = self.model.generate(**inputs)
        # transcription = self.processor.batch_decode(generated_ids, skip_special_tokens=True)[0]
        
        # For this example, return a mock result
        # In practice, replace this with your actual transcription logic
        mock_result = {
            "text": "This is a mock transcription",
            "segments": [
                {
                    "start": 0.0,
                    "end": 2.0,
                    "text": "This is a",
                    "words": [
                        {"start": 0.0, "end": 0.5, "text": "This"},
                        {"start": 0.5, "end": 1.0, "text": "is"},
                        {"start": 1.0, "end": 1.5, "text": "a"}
                    ]
                },
                {
                    "start": 2.0,
                    "end": 3.0,
                    "text": "mock transcription",
                    "words": [
                        {"start": 2.0, "end": 2.5, "text": "mock"},
                        {"start": 2.5, "end": 3.0, "text": "transcription"}
                    ]
                }
            ],
            "language": self.original_language or "en"
        }
        
        return mock_result
    
    def ts_words(self, transcription_result):
        """
        Extract word-level timestamps from transcription result.
        
        Args:
            transcription_result: Result from transcribe() method
            
        Returns:
            List[Tuple[float, float, str]]: List of (start_time, end_time, word) tuples
        """
        words = []
        for segment in transcription_result.get("segments", []):
            for word in segment.get("words", []):
                words.append((
                    word.get("start", 0),
                    word.get("end", 0),
                    word.get("text", "")
                ))
        return words
    
    def segments_end_ts(self, transcription_result):
        """
        Extract segment end timestamps from transcription result.
        
        Args:
            transcription_result: Result from transcribe() method
            
        Returns:
            List[float]: List of segment end timestamps
        """
        return [segment.get("end", 0) for segment in transcription_result.get("segments", [])]

