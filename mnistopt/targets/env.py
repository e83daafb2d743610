"""The environment a benchmark ran in: CPU model and SIMD flags, cores, library versions.

Standard library only: the device-side worker records it on the device too.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

from ..hw import usable_cores

# Flags that decide which int8 kernels a runtime can use.
# x86: avx2 (the baseline of ORT/XNNPACK fast paths), VNNI (int8 dot products: avx512_vnni or
# avx_vnni); aarch64: asimddp (SDOT/UDOT), i8mm (SMMLA), fphp/asimdhp (fp16 arithmetic).
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni",
                     "avx512vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "fphp",
                     "asimdhp", "sve", "bf16")

LIBRARIES = ("numpy", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "torch",
             "tensorflow", "tensorflow-cpu", "keras", "onnx")


def cpu_info() -> dict:
    """Model, machine and the SIMD flags that matter, as `mnistopt.hw` reads them."""
    from ..hw import cpu_info as hw_cpu_info

    hw = hw_cpu_info()
    return {
        "model": hw.model,
        "machine": hw.machine,
        "flags": sorted(f for f in hw.flags if f in INTERESTING_FLAGS),
        "avx2": hw.avx2,
        "vnni": hw.vnni,
        "dotprod": hw.arm_dotprod,
        "int8_flags": hw.int8_flags(),
        "cpus": hw.cores,
    }


def library_versions(names=LIBRARIES) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def gpu_info() -> list[dict] | None:
    """Each NVIDIA GPU's name, driver and memory, as nvidia-smi reports them (None: no
    nvidia-smi, or it fails; a machine without a GPU answers at once)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    fields = ("name", "driver_version", "memory.total")
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        name, driver, mem = (part.strip() for part in line.split(",")[:3])
        gpus.append({"name": name, "driver": driver,
                     "memory_mib": int(mem) if mem.isdigit() else None})
    return gpus


def environment(threads: int | None = None) -> dict:
    """One dict describing this machine, for the report and for comparing runs."""
    cores = usable_cores()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": cpu_info(),
        "cores_available": cores,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        # A load average near or above the core count means other work competed for the CPU.
        "loadavg": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
        "gpus": gpu_info(),
    }
