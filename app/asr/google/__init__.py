"""Backend ``google``: a bridge to Google Cloud Speech-to-Text ``streaming_recognize``.

* `loader.GoogleLoader` — the registry's entry: credentials, a small pool of
  gRPC channels shared by every session, one `bridge.GoogleRecognizer` per session.
* `bridge.GoogleRecognizer` — the session's recognition thread: a loop of
  Google streams ("generations") that restarts before Google's stream limit,
  reconnects after transient errors and resends audio Google has not finalised.
* `replay` — pure helpers: request splitting, the buffer of audio not yet
  covered by a final. (The bridge sends the client's LINEAR16 bytes as they came.)

Nothing here imports ``google-cloud-speech`` at import time of this package;
`loader` imports it when a session first asks for the backend, and says which
extra to install when it is missing.
"""
