"""Every setting is documented where operators look: `.env.example` and the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_in_env_example_and_readme(name: str) -> None:
    env_name = name.upper()
    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    # In .env.example as an assignment (possibly commented out: optional settings).
    assert re.search(rf"^#? ?{env_name}=", env_example, re.MULTILINE), env_name
    # In the README's configuration table.
    assert f"| `{env_name}` |" in readme, env_name
