"""Start the streaming ASR service: `python run.py [--flags]`.

Every setting is also a flag (`python run.py --help` lists them; see app/cli.py):
flags win over the environment, which wins over `.env`.
"""

from app.server import main

if __name__ == "__main__":
    main()
