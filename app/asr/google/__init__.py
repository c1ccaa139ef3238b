"""Backend ``google``: a bridge to Google Cloud Speech-to-Text ``streaming_recognize``.

* `loader.GoogleLoader` — the registry's entry: credentials, a small pool of
  gRPC channels shared by every session, one `bridge.GoogleRecognizer` per session.
* `bridge.GoogleRecognizer` — the session's recognition thread: a loop of
  Google streams ("generations") that restarts before Google's stream limit,
  reconnects after transient errors and resends audio Google has not finalised.
* `replay` — pure helpers: float32 → LINEAR16 bytes, request splitting, the
  buffer of audio not yet covered by a final.

Nothing here imports ``google-cloud-speech`` at import time of this package;
`loader` imports it when a session first asks for the backend, and says which
extra to install when it is missing.
"""
