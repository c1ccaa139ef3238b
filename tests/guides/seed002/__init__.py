"""Seed 002 (../shared/seeds/002_7b6dd3b350f29983.txt): its `MyCustomASR(ASRBase)` shape, filled in.

The guide shows the shape and leaves the model out (``self.model = ...``); here
the model is `WordModel`, which hears the words `tests.guides.audio` encodes, so
the shape can stream. The imports are the guide's with the package renamed
(``real_time_asr_backend`` → ``asr_interface``), as a user following it would.
"""
