"""The guides' backends: the `registry` and the `whisper_online_processor`."""
