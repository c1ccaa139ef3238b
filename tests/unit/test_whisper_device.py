"""WHISPER_DEVICE: which device and compute type the faster-whisper backend settles on.

`place` is tested with a scripted CUDA probe (a GPU present or not); the tests
marked `no_gpu` ask this machine's real CTranslate2, which sees no CUDA device here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from app.asr import faster_whisper_loader
from app.asr.faster_whisper_backend import (
    CudaReport,
    FasterWhisperASR,
    Placement,
    place,
    probe_cuda,
)
from app.asr.faster_whisper_loader import FasterWhisperLoader
from app.asr.models import TINY_EN, resolve_model_dir
from app.cpu_info import compute_info, describe
from app.errors import BackendUnavailable, CloseCode
from app.settings import Settings

CUDA_ERROR = "CUDA failed with error no CUDA-capable device is detected"
no_gpu = pytest.mark.skipif(
    probe_cuda().devices > 0, reason="this machine has a GPU: the refusal cannot happen"
)


def no_cuda() -> CudaReport:
    return CudaReport(0, CUDA_ERROR)


def one_gpu() -> CudaReport:
    return CudaReport(1)


def not_asked() -> CudaReport:
    raise AssertionError("WHISPER_DEVICE=cpu must not ask CTranslate2 about CUDA")


@pytest.fixture(autouse=True)
def _no_exported_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported WHISPER_DEVICE or WHISPER_COMPUTE_TYPE must not change these."""
    monkeypatch.delenv("WHISPER_DEVICE", raising=False)
    monkeypatch.delenv("WHISPER_COMPUTE_TYPE", raising=False)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- place


def test_cpu_is_the_default_with_int8_and_cuda_is_not_asked() -> None:
    assert settings().whisper_device == "cpu"
    assert place("cpu", probe=not_asked) == Placement("cpu", "int8", "cpu", None)


def test_auto_without_cuda_runs_on_the_cpu_with_int8() -> None:
    placement = place("auto", probe=no_cuda)
    assert (placement.device, placement.compute_type) == ("cpu", "int8")
    assert placement.cuda == CudaReport(0, CUDA_ERROR)


def test_auto_with_a_gpu_runs_on_cuda_with_float16() -> None:
    assert place("auto", probe=one_gpu) == Placement("cuda", "float16", "auto", CudaReport(1))
    assert place("cuda", probe=one_gpu).compute_type == "float16"


def test_cuda_without_a_device_is_backend_unavailable_naming_the_setting() -> None:
    with pytest.raises(BackendUnavailable) as err:
        place("cuda", probe=no_cuda)
    assert err.value.code == "backend_unavailable"
    assert err.value.close_code == CloseCode.POLICY_VIOLATION
    assert err.value.detail == (
        f"WHISPER_DEVICE is 'cuda', but CTranslate2 reports 0 CUDA devices ({CUDA_ERROR}). "
        "Set WHISPER_DEVICE=cpu, or auto to use a GPU only when there is one."
    )


def test_a_compute_type_the_operator_set_wins_on_either_device() -> None:
    assert place("cpu", "float32", probe=not_asked).compute_type == "float32"
    assert place("cuda", "int8_float16", probe=one_gpu).compute_type == "int8_float16"
    assert place("auto", "float32", probe=no_cuda).compute_type == "float32"


# --------------------------------------------------------------------------- the loader


def test_the_loader_passes_a_compute_type_only_when_the_operator_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``WHISPER_COMPUTE_TYPE``'s default (int8) must not pin a GPU to int8."""
    monkeypatch.setattr(faster_whisper_loader, "place", functools.partial(place, probe=one_gpu))
    assert FasterWhisperLoader(settings(whisper_device="cuda")).placement.compute_type == "float16"
    explicit = settings(whisper_device="cuda", whisper_compute_type="int8")
    assert FasterWhisperLoader(explicit).placement.compute_type == "int8"
    monkeypatch.setenv("WHISPER_COMPUTE_TYPE", "int8_float16")
    from_env = FasterWhisperLoader(settings(whisper_device="auto"))
    assert from_env.placement == Placement("cuda", "int8_float16", "auto", CudaReport(1))


def test_the_loader_on_the_default_settings_is_cpu_int8() -> None:
    loader = FasterWhisperLoader(settings())
    assert loader.placement == Placement("cpu", "int8", "cpu", None)
    described = loader.describe()
    assert (described["device"], described["compute_type"]) == ("cpu", "int8")


# --------------------------------------------------------------------------- real CTranslate2


@no_gpu
def test_this_machines_ctranslate2_sees_no_cuda_device_and_says_why() -> None:
    report = probe_cuda()
    assert report.devices == 0
    placement = place("auto")
    assert (placement.device, placement.compute_type) == ("cpu", "int8")


@no_gpu
def test_the_loader_refuses_cuda_here_with_the_real_ctranslate2() -> None:
    with pytest.raises(BackendUnavailable) as err:
        FasterWhisperLoader(settings(whisper_device="cuda"))
    assert err.value.code == "backend_unavailable"
    assert "WHISPER_DEVICE is 'cuda'" in err.value.detail
    assert "0 CUDA devices" in err.value.detail


@no_gpu
def test_a_model_that_cuda_cannot_load_is_not_called_damaged(tmp_path: Path) -> None:
    """Past `place` (a GPU that fails at load), CUDA's error is reported as such."""
    model_dir = resolve_model_dir(TINY_EN, tmp_path)
    with pytest.raises(BackendUnavailable) as err:
        FasterWhisperASR("en", model_dir=model_dir, device="cuda", compute_type="float16")
    assert err.value.code == "backend_unavailable"
    assert err.value.detail.startswith(
        "CTranslate2 could not load the model on cuda with compute type 'float16'"
    )
    assert "damaged" not in err.value.detail and str(model_dir) not in err.value.detail


# --------------------------------------------------------------------------- cpu_info


def test_compute_info_names_the_device() -> None:
    on_cpu = describe(cpuinfo="model name : AMD EPYC\n", environ={}, machine="x86_64")
    assert (on_cpu.device, on_cpu.label()) == ("cpu", "AMD EPYC, oneDNN, GENERIC")
    on_gpu = describe(
        cpuinfo="model name : AMD EPYC\n", environ={}, machine="x86_64", device="cuda"
    )
    assert on_gpu.label() == "AMD EPYC, oneDNN, GENERIC, on cuda"
    assert on_gpu.as_dict()["device"] == "cuda"


@no_gpu
def test_compute_info_follows_whisper_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    assert compute_info().device == "cpu"
    monkeypatch.setenv("WHISPER_DEVICE", "auto")
    assert compute_info().device == "cpu"  # no GPU here
    assert compute_info(device="cuda").device == "cuda"
