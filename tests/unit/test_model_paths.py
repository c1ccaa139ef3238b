"""Every spelling of one model folder is one model (`app.asr.models.resolve_model_dir`).

Loaders share a loaded model by its folder. Keyed by the folder as a client spelled
it, ``DIR/../DIR_NAME`` loaded another copy each time (about 60 MB and 2 threads
for tiny.en, never freed), while sessions on the default model waited.
"""

from __future__ import annotations

from pathlib import Path

from app.asr.models import TINY_EN, resolve_model_dir


def test_spellings_of_a_folder_resolve_to_one_folder(tmp_path: Path) -> None:
    bundled = resolve_model_dir(TINY_EN, tmp_path)
    dotted = f"{bundled}/../{bundled.name}"
    doubled = f"{bundled}/../{bundled.name}/../{bundled.name}/"
    link = tmp_path / "link"
    link.symlink_to(bundled)
    spelled = {resolve_model_dir(name, tmp_path) for name in (dotted, doubled, str(link))}
    assert spelled == {bundled}
    assert bundled.is_absolute() and ".." not in bundled.parts
