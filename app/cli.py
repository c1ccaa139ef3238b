"""The server's command line: every setting is also a flag.

The flags are generated from `Settings` by pydantic-settings' own CLI support
(`CliSettingsSource`), so a new setting is a new flag with nothing to copy:
``MIN_CHUNK_SIZE`` is ``--min-chunk-size``, ``DEFAULT_MODEL`` is
``--default-model``. The integration guides' (whisper_streaming's) names work
too: ``--lan``, ``--model`` and ``--backend`` are shortcuts for
``--default-language-code``, ``--default-model`` and ``--default-backend``;
``--min-chunk-size``, ``--buffer-trimming``, ``--buffer-trimming-sec``,
``--host`` and ``--port`` are the settings' own names.

A flag wins over the environment, which wins over ``.env``. ``--help`` lists
every flag and exits; an unknown flag, a bad value or a default backend that
cannot run on this machine (``--backend mlx-whisper`` off Apple Silicon) ends
the program with a message and exit status 2, before anything is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.asr.base import SupportsCheck
from app.asr.registry import Registry
from app.errors import ConfigError
from app.languages import is_bcp47
from app.plan import SessionDefaults
from app.settings import Settings

# The guides' flag names for settings whose own names are longer (keys: the
# settings' flag names, as pydantic-settings matches them under kebab case).
GUIDE_SHORTCUTS: dict[str, str] = {
    "default-language-code": "lan",
    "default-model": "model",
    "default-backend": "backend",
}
USAGE_ERROR = 2  # argparse's exit status for a bad command line
INSTALLED = "installed"  # a model's state in a backend's `describe()["models"]`


def settings_from_command_line(
    argv: Sequence[str] | None = None, prog: str | None = None
) -> Settings:
    """`Settings` from the flags in ``argv`` (default: ``sys.argv[1:]``), the environment and .env.

    Exits (`SystemExit`) after ``--help``, and with status 2 on a bad command line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or Path(sys.argv[0]).name or "asr-stream-server"
    try:
        settings = Settings(
            _cli_parse_args=args,
            _cli_prog_name=prog,
            _cli_kebab_case=True,
            _cli_shortcuts=GUIDE_SHORTCUTS,
            _cli_exit_on_error=True,
        )
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        _usage_error(prog, problems)
    except SettingsError as exc:  # a value the environment gives as JSON that does not parse
        _usage_error(prog, str(exc))
    refuse_unusable_backend(settings, prog)
    return settings


def refuse_unusable_backend(settings: Settings, prog: str) -> None:
    """Exit with the reason when the default backend (or its model) cannot run here.

    The model is checked when the backend lists its models (`describe`), as the
    faster-whisper backend does: nothing is downloaded at run time, so
    ``--model small`` is refused here rather than at start-up.
    """
    registry = Registry(settings)
    backend = settings.default_backend
    if backend not in registry:
        _usage_error(
            prog,
            f"--backend {backend!r} is not registered; available: "
            f"{', '.join(registry.list_loaders())}.",
        )
    info = registry.describe(backend)
    if not info.get("usable", True):
        _usage_error(prog, f"--backend {backend!r} cannot run here: {info.get('reason')}")
    models, model = info.get("models"), settings.default_model
    if not isinstance(models, dict) or not model or Path(model).expanduser().is_dir():
        return
    if model not in models:
        _usage_error(
            prog,
            f"--model {model!r} is not available to backend {backend!r}: use one of "
            f"{', '.join(models)} or the path of a model folder.",
        )
    if models[model] != INSTALLED:
        _usage_error(prog, f"--model {model!r} cannot be used: {models[model]}")
    refuse_unserved_language(settings, registry, prog)


def refuse_unserved_language(settings: Settings, registry: Registry, prog: str) -> None:
    """Exit with the reason when the default model cannot serve the default language
    (``--lan ar-EG`` with the English-only ``tiny.en``, ``--lan auto``): start-up would
    fail loading it, with a traceback."""
    language_code = settings.default_language_code
    if not is_bcp47(language_code):
        _usage_error(
            prog,
            f"--lan {language_code!r} is not a BCP-47 language tag (examples: en-US, ar-EG); "
            "there is no language detection: name the language streams are in.",
        )
    loader = registry.get_loader(settings.default_backend)
    if not isinstance(loader, SupportsCheck):
        return
    try:
        loader.check(SessionDefaults.from_settings(settings).engine_request())
    except ConfigError as exc:
        flag = "--lan" if exc.field == "language_code" else "--model"
        _usage_error(prog, f"{flag}: {exc.detail}")


def _problem(error: object) -> str:
    assert isinstance(error, dict)
    where = ".".join(str(part) for part in error.get("loc", ()))
    flag = f"--{where.replace('_', '-')}" if where else "settings"
    return f"{flag}: {error.get('msg')}"


def _usage_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)
