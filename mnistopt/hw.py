"""What CPU is this, and which int8 instructions does it have? Read from /proc/cpuinfo.

No numpy, no frameworks: the exporter uses it to pick an int8 preset and the benchmark to label
its figures. Where /proc/cpuinfo is absent (macOS, Windows, a sandbox) the answer is
``platform``'s, with no flags: callers then take the conservative choice.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

# Flags that matter for int8 inference, as the Linux kernel spells them.
INT8_FLAGS = ("sse4_1", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
              "asimd", "asimddp", "i8mm", "sve")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # "AMD EPYC", "Neoverse-N1 (0x41/0xd0c)", ...
    machine: str  # platform.machine(): x86_64, aarch64, arm64, ...
    cores: int  # logical processors
    flags: frozenset = field(default_factory=frozenset)
    physical_cores: int = 0  # distinct (physical id, core id) pairs; 0 when the OS does not say

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "i386")

    @property
    def is_arm(self) -> bool:
        return self.machine.lower() in ("aarch64", "arm64") or self.machine.lower().startswith("arm")

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512_vnni(self) -> bool:
        return "avx512_vnni" in self.flags

    @property
    def avx_vnni(self) -> bool:
        return "avx_vnni" in self.flags

    @property
    def vnni(self) -> bool:
        """x86 u8*s8 dot product with 32-bit accumulation (no int16 intermediate to saturate)."""
        return self.avx512_vnni or self.avx_vnni or "amx_int8" in self.flags

    @property
    def arm_dotprod(self) -> bool:
        return "asimddp" in self.flags

    def int8_flags(self) -> list[str]:
        return [f for f in INT8_FLAGS if f in self.flags]

    def as_dict(self) -> dict:
        return {"model": self.model, "machine": self.machine, "cores": self.cores,
                "int8_flags": self.int8_flags()}


# ARM's /proc/cpuinfo names no model, only implementer and part numbers; the common cores.
_ARM_PARTS = {
    (0x41, 0xd03): "Cortex-A53", (0x41, 0xd04): "Cortex-A35", (0x41, 0xd05): "Cortex-A55",
    (0x41, 0xd07): "Cortex-A57", (0x41, 0xd08): "Cortex-A72", (0x41, 0xd09): "Cortex-A73",
    (0x41, 0xd0a): "Cortex-A75", (0x41, 0xd0b): "Cortex-A76", (0x41, 0xd0c): "Neoverse-N1",
    (0x41, 0xd0d): "Cortex-A77", (0x41, 0xd40): "Neoverse-V1", (0x41, 0xd41): "Cortex-A78",
    (0x41, 0xd46): "Cortex-A510", (0x41, 0xd47): "Cortex-A710", (0x41, 0xd49): "Neoverse-N2",
    (0x41, 0xd4f): "Neoverse-V2", (0x61, 0x022): "Apple M1",
}


def parse_cpuinfo(text: str, machine: str | None = None) -> CpuInfo:
    """A CpuInfo from the text of /proc/cpuinfo (x86 or ARM)."""
    machine = machine or platform.machine()
    fields: dict[str, str] = {}
    processors = 0
    cores, package = set(), "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "physical id":
            package = value
        elif key == "core id":
            cores.add((package, value))
        fields.setdefault(key, value)  # the first processor speaks for all
    flags = frozenset((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("cpu model") or ""
    if not model and "cpu implementer" in fields:
        try:
            key = (int(fields["cpu implementer"], 16), int(fields.get("cpu part", "0"), 16))
            model = _ARM_PARTS.get(key, "ARM") + f" (0x{key[0]:x}/0x{key[1]:03x})"
        except ValueError:
            model = "ARM"
    return CpuInfo(model=model or platform.processor() or machine, machine=machine,
                   cores=processors or os.cpu_count() or 1, flags=flags,
                   physical_cores=len(cores))


def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        machine = platform.machine()
        return CpuInfo(model=platform.processor() or machine, machine=machine,
                       cores=os.cpu_count() or 1)


def usable_cores() -> int:
    """Logical processors this process may run on (its affinity mask, e.g. under taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may use: hyper-threads share one core's SIMD units, so an
    inference thread pool larger than this only adds contention."""
    usable = usable_cores()
    phys = cpu_info().physical_cores
    return max(1, min(usable, phys)) if phys else usable


if __name__ == "__main__":  # python -m mnistopt.hw
    import json

    print(json.dumps(cpu_info().as_dict(), indent=2))
