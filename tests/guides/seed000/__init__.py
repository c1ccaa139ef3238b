# The guide's Step 3 of Path 1 and of Path 2 ("Register in your module's __init__.py"),
# copied verbatim from ../shared/seeds/000_d4fded4ebf7c16a5.txt (lint is off so it stays so).
# ruff: noqa

from asr_interface.backends.registry import register_loader
from .my_model_loader import MyCustomASRLoader

# Register with a unique backend name
register_loader("my_custom_backend", MyCustomASRLoader())

# Register your loader
from asr_interface.backends.registry import register_loader
from .my_engine_loader import MyEngineLoader

register_loader("my_custom_engine", MyEngineLoader())

# Use via API
# POST /load_model
{
  "backend": "my_custom_engine",
  "model": "/path/to/your/model",
  "lan": "en",
  "min_chunk_size": 1.0
}
