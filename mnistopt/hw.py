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
    vendor: str = ""  # x86 vendor_id: GenuineIntel, AuthenticAMD
    family: int = 0  # x86 "cpu family"
    model_number: int = 0  # x86 "model"
    mhz: float = 0.0  # /proc/cpuinfo's "cpu MHz": the current or nominal clock, not the boost

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
                   physical_cores=len(cores), vendor=fields.get("vendor_id", ""),
                   family=_int(fields.get("cpu family")), model_number=_int(fields.get("model")),
                   mhz=_float(fields.get("cpu mhz")))


def _int(v) -> int:
    try:
        return int(str(v).strip(), 0)
    except (TypeError, ValueError):
        return 0


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


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


# --- peak multiply-adds ---------------------------------------------------------------------

CLOCK_ENV = "MNISTOPT_CPU_GHZ"


@dataclass(frozen=True)
class Peak:
    """One core's multiply-adds per cycle by data type, and the clock they are counted at."""

    fp32: int  # fp32 FMAs per cycle per core (0: unknown)
    int8: int  # int8 multiply-adds per cycle per core, best instruction the CPU has
    ghz: float  # 0: unknown
    clock_source: str
    fp32_basis: str
    int8_basis: str

    def macs_per_s(self, dtype: str, cores: int = 1) -> float | None:
        """Peak multiply-adds per second on `cores` cores for 'fp32' or 'int8'."""
        per = self.int8 if dtype == "int8" else self.fp32
        return per * self.ghz * 1e9 * cores if per and self.ghz else None

    def as_dict(self) -> dict:
        return {"fp32_macs_per_cycle": self.fp32, "int8_macs_per_cycle": self.int8,
                "ghz": self.ghz, "clock_source": self.clock_source,
                "fp32_basis": self.fp32_basis, "int8_basis": self.int8_basis}


def _x86_units(cpu: CpuInfo) -> tuple[int, str]:
    """(512-bit results per cycle from the multiply units of one core, why). Not in the flags:
    from the vendor and family."""
    if cpu.vendor == "AuthenticAMD" and cpu.family >= 0x1A:
        return 2, "Zen 5: two 512-bit pipes"
    if cpu.vendor == "AuthenticAMD":
        return 1, "Zen 4: two 256-bit pipes, AVX-512 double-pumped"
    return 2, "two 512-bit units (Xeon Gold/Platinum; one-unit parts peak at half)"


def peak(cpu: CpuInfo | None = None, env=None, cpufreq="/sys/devices/system/cpu/cpu0/cpufreq"
         ) -> Peak:
    """This CPU's per-core peak, from its flags and clock.

    Clock: $MNISTOPT_CPU_GHZ if set, else cpufreq's maximum (the boost clock), else
    /proc/cpuinfo's MHz, which in a VM is the nominal clock: cores boost above it, and a
    % of peak counted at it can read over 100 %."""
    cpu = cpu or cpu_info()
    env = os.environ if env is None else env
    f = cpu.flags
    if cpu.is_x86:
        wide, why = _x86_units(cpu)
        if "avx512f" in f:
            fp32 = 16 * wide
            fp32_basis = f"AVX-512 FMA, {why}"
        elif "fma" in f and "avx2" in f and cpu.vendor == "AuthenticAMD" and \
                cpu.family == 0x17 and cpu.model_number < 0x30:
            fp32, fp32_basis = 8, "AVX2 FMA on Zen 1: two 128-bit FMA pipes"
        elif "fma" in f and "avx2" in f:
            fp32, fp32_basis = 16, "AVX2 FMA: two 256-bit FMA units"
        elif "avx" in f:
            fp32, fp32_basis = 8, "AVX without FMA: one 256-bit multiply and one add per cycle"
        else:
            fp32, fp32_basis = 4, "SSE: one 128-bit multiply and one add per cycle"
        if "amx_int8" in f:
            int8, int8_basis = 1024, "AMX TMUL: 1024 int8 multiply-adds per cycle"
        elif "avx512_vnni" in f:
            int8 = 64 * wide
            int8_basis = f"AVX-512 VNNI vpdpbusd (64 u8*s8 per instruction), {why}"
        elif "avx_vnni" in f:
            int8, int8_basis = 64, "AVX-VNNI vpdpbusd on 256 bits, two ports"
        elif "avx512bw" in f:
            int8 = 32 * wide
            int8_basis = "AVX-512BW vpmaddubsw + vpmaddwd (no VNNI): two instructions per 64 products"
        elif "avx2" in f:
            int8, int8_basis = 32, "AVX2 vpmaddubsw + vpmaddwd (no VNNI): two instructions per 32 products"
        else:
            int8, int8_basis = 0, "no AVX2: unknown"
    elif cpu.is_arm:
        fp32, fp32_basis = 8, "NEON: two 128-bit FMA pipes"
        if "i8mm" in f:
            int8, int8_basis = 64, "i8mm smmla (32 multiply-adds per instruction), two pipes"
        elif "asimddp" in f:
            int8, int8_basis = 32, "dot product sdot/udot (16 per instruction), two pipes"
        else:
            int8, int8_basis = 16, "NEON smlal (8 per instruction), two pipes"
    else:
        fp32, int8, fp32_basis, int8_basis = 0, 0, "unknown CPU", "unknown CPU"
    ghz, source = clock(cpu, env, cpufreq)
    return Peak(fp32, int8, ghz, source, fp32_basis, int8_basis)


def clock(cpu: CpuInfo, env, cpufreq: str) -> tuple[float, str]:
    """(GHz, where it came from) for peak figures; (0, why) when nothing says."""
    raw = env.get(CLOCK_ENV)
    if raw:
        v = _float(raw)
        if v > 0:
            return v, f"${CLOCK_ENV}"
    try:
        with open(os.path.join(cpufreq, "cpuinfo_max_freq")) as f:
            khz = _float(f.read().strip())
        if khz > 0:
            return khz / 1e6, "cpufreq cpuinfo_max_freq (boost)"
    except OSError:
        pass
    if cpu.mhz > 0:
        return cpu.mhz / 1e3, "/proc/cpuinfo cpu MHz (nominal; the core may boost higher)"
    return 0.0, f"unknown (set ${CLOCK_ENV})"


if __name__ == "__main__":  # python -m mnistopt.hw
    import json

    print(json.dumps({**cpu_info().as_dict(), "peak": peak().as_dict()}, indent=2))
