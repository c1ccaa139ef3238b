"""Start the streaming ASR service: `python run.py` (settings from the environment / .env)."""

from app.server import main

if __name__ == "__main__":
    main()
