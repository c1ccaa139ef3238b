"""Which CPU, and which of CTranslate2's kernels, computed a transcript.

CTranslate2 takes its int8 and float32 matrix products from Intel MKL on a
``GenuineIntel`` CPU and from oneDNN on every other x86-64 CPU, unless
``CT2_USE_MKL`` says otherwise (CTranslate2 ``src/cpu/backend.cc``,
``mayiuse_mkl``). Its own kernels (softmax, layer norm, quantization) run the
instruction set ``CT2_FORCE_CPU_ISA`` names, else AVX2, AVX or generic code,
whichever the CPU has first; AVX-512 only when forced (``src/cpu/cpu_isa.cc``).
MKL and oneDNN round the int8 products differently, so the same clip can give
other words on an Intel and an AMD machine: two figures are comparable only when
these match (bench/results/README.md, issue 23).

On a CUDA GPU (``WHISPER_DEVICE``) the model's products run there instead, and
the CPU fields describe only the host: ``device`` says which.

``describe`` is pure (the texts and values in, a ``ComputeInfo`` out);
``compute_info`` reads them from this machine and this process.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MKL = "MKL"
ONEDNN = "oneDNN"
INTEL = "GenuineIntel"
# CTranslate2 has an int16 GEMM only through MKL: its list of supported compute
# types names int16 exactly when MKL is the GEMM backend of this process.
MKL_ONLY_COMPUTE_TYPE = "int16"
# string_to_bool in CTranslate2's src/utils.cc: exactly these, anything else is false.
TRUE_WORDS = frozenset({"1", "true", "TRUE"})


@dataclass(frozen=True)
class ComputeInfo:
    """The CPU and CTranslate2's choices on it, as a benchmark result records them."""

    cpu_model: str
    cpu_vendor: str
    gemm_backend: str  # MKL or oneDNN (x86-64), else what is known
    cpu_isa: str  # the ISA of CTranslate2's own kernels: AVX2, AVX512, AVX, GENERIC, NEON
    ct2_use_mkl: str | None  # the variables as set, None when unset
    ct2_force_cpu_isa: str | None
    ctranslate2: str | None  # its version, None when not installed
    device: str = "cpu"  # where CTranslate2 runs the model: "cpu" or "cuda"

    def label(self) -> str:
        """One line for a printed summary: ``AMD EPYC, oneDNN, AVX2`` (``…, on cuda``)."""
        cpu = f"{self.cpu_model}, {self.gemm_backend}, {self.cpu_isa}"
        return cpu if self.device == "cpu" else f"{cpu}, on {self.device}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpuinfo_field(cpuinfo: str, name: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def describe(
    *,
    cpuinfo: str,
    environ: Mapping[str, str],
    machine: str,
    compute_types: Collection[str] | None = None,
    ctranslate2_version: str | None = None,
    device: str = "cpu",
) -> ComputeInfo:
    """What CTranslate2 runs on: from ``/proc/cpuinfo``'s text, the environment,
    ``platform.machine()`` and, when known, ``ctranslate2.get_supported_compute_types("cpu")``
    (which settles the GEMM backend; without it the rule of ``mayiuse_mkl`` does)."""
    vendor = _cpuinfo_field(cpuinfo, "vendor_id") or ""
    model = _cpuinfo_field(cpuinfo, "model name") or machine or "unknown"
    flags = set((_cpuinfo_field(cpuinfo, "flags") or "").split())
    use_mkl = environ.get("CT2_USE_MKL") or None
    force_isa = environ.get("CT2_FORCE_CPU_ISA") or None
    x86 = machine.lower() in {"x86_64", "amd64", "i686", "i386"}

    if compute_types is not None:
        mkl = MKL_ONLY_COMPUTE_TYPE in compute_types
    elif use_mkl is not None:
        mkl = use_mkl in TRUE_WORDS
    else:
        mkl = vendor == INTEL
    if mkl:
        gemm = MKL
    elif x86:
        gemm = ONEDNN
    else:
        gemm = "not MKL"  # Ruy, Accelerate or OpenBLAS, by how the wheel was built

    if force_isa:
        isa = force_isa
    elif x86:
        isa = "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else "GENERIC"
    elif machine.lower() in {"aarch64", "arm64"}:
        isa = "NEON"
    else:
        isa = "GENERIC"
    return ComputeInfo(
        cpu_model=model,
        cpu_vendor=vendor or "unknown",
        gemm_backend=gemm,
        cpu_isa=isa,
        ct2_use_mkl=use_mkl,
        ct2_force_cpu_isa=force_isa,
        ctranslate2=ctranslate2_version,
        device=device,
    )


def compute_info(device: str | None = None) -> ComputeInfo:
    """``describe`` for this machine and this process's environment.

    ``device``: where the model runs; by default where ``WHISPER_DEVICE`` (the
    environment, then ``.env``) puts the faster-whisper backend, as the server would.
    """
    cpuinfo_path = Path("/proc/cpuinfo")
    cpuinfo = cpuinfo_path.read_text() if cpuinfo_path.exists() else ""
    if not _cpuinfo_field(cpuinfo, "model name") and platform.processor():
        cpuinfo += f"\nmodel name : {platform.processor()}\n"
    try:
        import ctranslate2
    except ImportError:
        compute_types, version = None, None
    else:
        compute_types = ctranslate2.get_supported_compute_types("cpu")
        version = ctranslate2.__version__
    return describe(
        cpuinfo=cpuinfo,
        environ=os.environ,
        machine=platform.machine(),
        compute_types=compute_types,
        ctranslate2_version=version,
        device=device or _whisper_device(),
    )


def _whisper_device() -> str:
    # Imported here: this module is also used by scripts that never load a model.
    from app.asr.faster_whisper_backend import place
    from app.settings import Settings

    return place(Settings().whisper_device).device
