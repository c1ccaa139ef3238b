"""The guides' ``asr_interface.web.server``: `create_app` (`app.main.create_app`).

``create_app()`` with no arguments reads the settings from the environment and
``.env``; backends registered before it is called are part of the app.
"""

from app.main import create_app

__all__ = ["create_app"]
