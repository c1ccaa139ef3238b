"""Seed 002's Step 1 shape: ``__init__(modelsize, lan, **kwargs)`` loads the model, then
``super().__init__(lan, modelsize, **kwargs)``; `transcribe` adapts the model's output;
`ts_words`, `segments_end_ts` and `use_vad` implemented."""

from real_time_asr_backend.slimer_whisper_online import ASRBase  # the guide's import
from tests.guides.audio import WordModel


class MyCustomASR(ASRBase):
    def __init__(self, modelsize, lan, **kwargs):
        # Your custom model loading logic
        print(f"Loading MY custom model: {modelsize}")
        self.model = WordModel()  # Load your model weights/files here
        self.vad = False
        super().__init__(lan, modelsize, **kwargs)

    def transcribe(self, audio, init_prompt=""):
        # Your custom transcription logic
        # Must return a dictionary with a "segments" key
        raw_result = self.model.process(audio, prompt=init_prompt)
        return self._adapt_result_to_standard_format(raw_result)

    def _adapt_result_to_standard_format(self, raw_result):
        words = [{"start": w["start"], "end": w["end"], "text": w["word"]} for w in raw_result]
        segment = {
            "start": words[0]["start"] if words else 0.0,
            "end": words[-1]["end"] if words else 0.0,
            "text": " ".join(w["text"] for w in words),
            "words": words,
        }
        return {
            "text": segment["text"],
            "segments": [segment] if words else [],
            "language": self.original_language,
        }

    def ts_words(self, transcription_result):
        return [
            (w["start"], w["end"], w["text"])
            for s in transcription_result["segments"]
            for w in s["words"]
        ]

    def segments_end_ts(self, transcription_result):
        return [s["end"] for s in transcription_result["segments"]]

    def use_vad(self):
        self.vad = True
