"""The service started the way the guides start theirs: plugins registered in code first.

``python -m tests.guides.serve [flags]``: imports seed 000's package (its
``__init__`` registers ``my_custom_backend`` and ``my_custom_engine``, the
guide's Step 3), registers seed 002's loader and a failing one the same way,
then runs the server's own `main` (flags, environment, .env).
"""

from __future__ import annotations

import tests.guides.seed000  # noqa: F401  (the guide's Step 3 runs at import)
from app.server import main
from asr_interface.backends.registry import register_loader
from tests.guides.failing import TranscribeRaises
from tests.guides.seed002.my_model_loader import MyCustomASRLoader

register_loader("seed002", MyCustomASRLoader())
register_loader("transcribe-raises", TranscribeRaises())

if __name__ == "__main__":
    main()
