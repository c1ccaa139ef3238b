# "Testing Your Integration", Integration Testing, copied verbatim from the guide
# ../shared/seeds/000_d4fded4ebf7c16a5.txt (nothing changed; lint is off so it stays so).
# ruff: noqa

import asyncio
from asr_interface.web.server import create_app
from fastapi.testclient import TestClient

def test_custom_backend_integration():
    app = create_app()
    client = TestClient(app)
    
    # Test model loading
    response = client.post("/load_model", json={
        "backend": "my_custom_backend",
        "model": "tiny",
        "lan": "en"
    })
    assert response.status_code == 200
    
    # Test transcription
    # Add more integration tests as needed
