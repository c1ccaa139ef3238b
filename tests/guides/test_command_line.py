"""The server's command line: every setting a flag, the guides' names, flags over env and .env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import GUIDE_SHORTCUTS, settings_from_command_line
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The flags of seed 003's command (../shared/seeds/003_6eed7c9cf0f95e74.txt), with the backend
# that runs here and the guides' trimming flags: the setting each sets, what it must
# become, and an environment value it must win over.
GUIDE_FLAGS: list[tuple[str, str, str, object, str]] = [
    ("--model", "tiny.en", "default_model", "tiny.en", "base"),
    ("--lan", "en", "default_language_code", "en", "ar-EG"),
    ("--backend", "faster-whisper", "default_backend", "faster-whisper", "nonesuch"),
    ("--min-chunk-size", "0.5", "min_chunk_size", 0.5, "2.0"),
    ("--buffer-trimming", "sentence", "buffer_trimming", "sentence", "segment"),
    ("--buffer-trimming-sec", "12", "buffer_trimming_sec", 12.0, "15"),
    ("--host", "0.0.0.0", "host", "0.0.0.0", "127.0.0.1"),
    ("--port", "9880", "port", 9880, "7000"),
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's variables or .env: each test sets what it checks."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("flag", "value", "field", "expected", "env"), GUIDE_FLAGS)
def test_each_guide_flag_sets_its_setting_over_the_environment(
    flag: str, value: str, field: str, expected: object, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(field.upper(), env)
    settings = settings_from_command_line([flag, value])
    assert getattr(settings, field) == expected


def test_seed_003s_command_with_a_backend_that_runs_here() -> None:
    argv = [part for flag, value, *_ in GUIDE_FLAGS for part in (flag, value)]
    settings = settings_from_command_line(argv)
    for _, _, field, expected, _ in GUIDE_FLAGS:
        assert getattr(settings, field) == expected


def test_every_setting_is_a_flag_under_its_own_name(tmp_path: Path) -> None:
    model_dir = str(tmp_path)  # a model folder: taken as it is
    settings = settings_from_command_line(
        ["--max-sessions", "3", "--default-model", model_dir, "--streaming-vad", "false"]
    )
    assert (settings.max_sessions, settings.default_model, settings.streaming_vad) == (
        3,
        model_dir,
        False,
    )


def test_flags_win_over_the_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("PORT=7000\nDEFAULT_LANGUAGE_CODE=en-AU\nMIN_CHUNK_SIZE=2.0\n")
    monkeypatch.setenv("PORT", "7100")
    monkeypatch.setenv("DEFAULT_LANGUAGE_CODE", "en-GB")
    settings = settings_from_command_line(["--port", "9880", "--lan", "en", "--model", "tiny.en"])
    assert (settings.port, settings.default_language_code, settings.default_model) == (
        9880,
        "en",
        "tiny.en",
    )
    assert settings.min_chunk_size == 2.0  # no flag: .env still counts
    from_env = settings_from_command_line([])  # and the environment over .env
    assert (from_env.port, from_env.default_language_code) == (7100, "en-GB")


def test_help_lists_every_setting_and_the_guides_names_and_exits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        settings_from_command_line(["--help"], prog="run.py")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: run.py")
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')} " in out, name
    for short in GUIDE_SHORTCUTS.values():
        assert f"--{short} " in out, short


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
        (["--port", "http"], "--port"),
        (["--buffer-trimming", "words"], "--buffer-trimming"),
        (["--backend", "mlx-whisper"], "cannot run here: mlx-whisper runs only on Apple Silicon"),
        (["--backend", "nonesuch"], "'nonesuch' is not registered; available:"),
        (["--model", "small"], "--model 'small' is not available to backend 'faster-whisper'"),
        # The default model cannot serve the default language: a usage error, not a
        # traceback at start-up (guide 004's DEFAULT_LANGUAGE_CODE=ar-EG with tiny.en).
        (["--lan", "ar-EG"], "--lan: Model 'tiny.en' understands English only"),
        (["--lan", "auto"], "there is no language detection"),
        (["--lan", "en_US"], "is not a BCP-47 language tag"),
    ],
)
def test_a_bad_command_line_is_an_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[:2] == ["--backend", "mlx-whisper"] and sys.platform == "darwin":
        pytest.skip("mlx-whisper may run on this Mac")
    with pytest.raises(SystemExit) as exit_:
        settings_from_command_line(argv, prog="run.py")
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def run_py(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_py_help_prints_and_exits_without_starting_a_server() -> None:
    done = run_py("--help")
    assert done.returncode == 0, done.stderr
    assert "--min-chunk-size" in done.stdout and "--lan" in done.stdout
    assert "Uvicorn running" not in done.stderr


def test_run_py_refuses_an_unknown_flag_and_mlx_off_apple() -> None:
    done = run_py("--model", "small", "--lan", "en", "--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
    if sys.platform != "darwin":
        done = run_py("--backend", "mlx-whisper", "--port", "9880")
        assert done.returncode == 2
        assert "mlx-whisper runs only on Apple Silicon" in done.stderr
