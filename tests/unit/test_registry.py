"""The backend registry: code, settings and entry-point routes; lazy imports; clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.asr import registry as registry_module
from app.asr.registry import Registry, parse_plugins
from app.errors import BackendUnavailable
from app.settings import Settings
from tests.support.scripted import CountingLoader


def settings(**kwargs: object) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[arg-type]


def write_plugin(root: Path, module: str, body: str) -> None:
    (root / f"{module}.py").write_text(body)


PLUGIN = """
from tests.support.scripted import CountingLoader
IMPORTED = True
def make(settings):
    return CountingLoader(min_chunk_sec=0.25)
"""


def test_builtins_are_listed_without_importing_them() -> None:
    reg = Registry(settings())
    assert {"faster-whisper", "whisper_timestamped", "mlx-whisper", "google"} <= set(
        reg.list_loaders()
    )
    assert "whisper_timestamped" not in sys.modules


def test_register_by_code_get_and_list() -> None:
    reg = Registry(settings(), entries={})
    loader = CountingLoader()
    reg.register_loader("mine", loader)
    assert reg.list_loaders() == ["mine"]
    assert reg.get_loader("mine") is loader
    assert "mine" in reg and "other" not in reg
    with pytest.raises(KeyError):
        reg.get_loader("other")


def test_module_level_register_loader_reaches_new_apps() -> None:
    loader = CountingLoader()
    registry_module.register_loader("by-code", loader)
    try:
        reg = Registry(settings())
        registry_module.set_current(reg)
        assert registry_module.get_loader("by-code") is loader
        assert "by-code" in registry_module.list_loaders()
    finally:
        registry_module._code_loaders.pop("by-code")


def test_settings_plugin_is_imported_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plugin(tmp_path, "lazy_plugin_mod", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(settings(asr_plugins="lazy=lazy_plugin_mod:make"))
    assert "lazy" in reg.list_loaders()
    assert "lazy_plugin_mod" not in sys.modules  # not imported until chosen
    loader = reg.get_loader("lazy")
    assert isinstance(loader, CountingLoader) and loader.min_chunk_sec == 0.25
    assert "lazy_plugin_mod" in sys.modules
    assert reg.get_loader("lazy") is loader  # built once


def test_entry_point_plugin_appears_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pip-installed package's entry point (a real dist-info folder on sys.path)."""
    write_plugin(tmp_path, "ep_plugin_mod", PLUGIN)
    dist = tmp_path / "asr_ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: asr-ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[asr_stream.backends]\nfrom-ep = ep_plugin_mod:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(settings())
    assert "from-ep" in reg.list_loaders()
    assert isinstance(reg.get_loader("from-ep"), CountingLoader)


def test_missing_dependency_names_the_package() -> None:
    reg = Registry(settings(), entries={"ghost": "no_such_package_xyz.loader:Loader"})
    with pytest.raises(BackendUnavailable) as err:
        reg.get_loader("ghost")
    assert "no_such_package_xyz" in err.value.detail and "ghost" in err.value.detail
    assert reg.describe("ghost") == {"usable": False, "reason": err.value.detail}


def test_misconfigured_target_is_reported() -> None:
    reg = Registry(settings(), entries={"typo": "app.asr.registry:NoSuchLoader"})
    with pytest.raises(BackendUnavailable, match="NoSuchLoader"):
        reg.get_loader("typo")


def test_describe_reports_unusable_builtins_with_reasons() -> None:
    reg = Registry(settings())
    mlx = reg.describe("mlx-whisper")
    assert mlx["usable"] is False and "Apple Silicon" in mlx["reason"]
    wt = reg.describe("whisper_timestamped")
    assert wt["usable"] is False
    assert (
        "asr-stream[whisper-timestamped]" in wt["reason"]
        or "WHISPER_TIMESTAMPED_MODEL" in wt["reason"]
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("a=x.y:Z", {"a": "x.y:Z"}),
        (" a = x:Y , b=p.q:R ", {"a": "x:Y", "b": "p.q:R"}),
    ],
)
def test_parse_plugins(spec: str, expected: dict[str, str]) -> None:
    assert parse_plugins(spec) == expected


@pytest.mark.parametrize("spec", ["a", "a=x", "=x:Y"])
def test_parse_plugins_refuses_malformed_entries(spec: str) -> None:
    with pytest.raises(ValueError, match="name=module:attr"):
        parse_plugins(spec)
