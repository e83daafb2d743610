"""Keep XNNPACK (LiteRT's CPU kernels) off Intel AMX, where its int8 kernels lose.

On a CPU with AMX-INT8 (Sapphire Rapids and later) XNNPACK runs int8 convolutions and dense
layers on AMX tiles: 16 rows x 64 bytes per tile, so a layer of 6 or 16 channels fills a tenth
of each tile and pays the tile setup on every call. Measured on a 2-core Xeon with AMX, batch 1,
one thread: lenet5 int8 37.5 µs with AMX, 10.5 µs on AVX-512 VNNI; edge int8 69.9 µs and
18.9 µs; at batch 256 3.3-4.0x fewer images per second with AMX. Float files do not use AMX and
run the same either way; OpenVINO's AMX kernels, on the other hand, win (its bfloat16 and int8).

Linux hands AMX's tile registers to a process only when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)`); XNNPACK asks once, when its first delegate starts, and uses AVX-512 when
refused. `deny_xtiledata()` makes that request fail with EPERM for every thread of this process
(a seccomp filter, which only refuses that one call) before LiteRT starts. What that costs, and
why it is the LiteRT backend's default only on CPUs that offer AMX:
- it lasts for the process: a library that asks for AMX later (OpenVINO, torch's oneDNN) runs on
  AVX-512 instead; one that already holds it keeps it;
- without CAP_SYS_ADMIN a seccomp filter needs the no_new_privs bit, also for the process and
  its children: a setuid program they start gains no privileges.
`options={"amx": "on"}` leaves the process alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

ARCH_GET_XCOMP_SUPP, ARCH_GET_XCOMP_PERM, ARCH_REQ_XCOMP_PERM = 0x1021, 0x1022, 0x1023
XTILEDATA = 1 << 18
_SYS_ARCH_PRCTL, _SYS_SECCOMP = 158, 317  # x86-64 syscall numbers
_AUDIT_ARCH_X86_64 = 0xC000003E
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
_PR_SET_NO_NEW_PRIVS = 38
_RET_ALLOW, _RET_EPERM = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM

_denied = False  # set once the filter is in place


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn))]


# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}: refuse
# arch_prctl(ARCH_REQ_XCOMP_PERM, ...) on x86-64, allow everything else.
_LD, _JEQ, _RET = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
PROGRAM = (
    (_LD, 0, 0, 4), (_JEQ, 0, 5, _AUDIT_ARCH_X86_64),  # other ABI: allow
    (_LD, 0, 0, 0), (_JEQ, 0, 3, _SYS_ARCH_PRCTL),      # other call: allow
    (_LD, 0, 0, 16), (_JEQ, 0, 1, ARCH_REQ_XCOMP_PERM),  # args[0], low word (little-endian)
    (_RET, 0, 0, _RET_EPERM),
    (_RET, 0, 0, _RET_ALLOW),
)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _xcomp(op: int) -> int | None:
    """arch_prctl(op, &mask) -> mask, or None where there is no such call (not Linux x86-64)."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return None
    mask = ctypes.c_uint64(0)
    if _libc().syscall(_SYS_ARCH_PRCTL, op, ctypes.byref(mask)) != 0:
        return None
    return mask.value


def offered() -> bool:
    """Whether this CPU and kernel offer AMX tile data to a process that asks."""
    return bool((_xcomp(ARCH_GET_XCOMP_SUPP) or 0) & XTILEDATA)


def held() -> bool:
    """Whether this process already holds AMX tile data (someone asked and was given it)."""
    return bool((_xcomp(ARCH_GET_XCOMP_PERM) or 0) & XTILEDATA)


def state() -> str:
    """One word for reports: "none" (no AMX here), "denied" (the filter is in place), "held",
    or "free" (offered, not yet asked for)."""
    if _denied:
        return "denied"
    if not offered():
        return "none"
    return "held" if held() else "free"


def _install(libc, prog) -> bool:
    # TSYNC: every thread of the process, not only this one (XNNPACK may start on another).
    return libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC,
                        ctypes.byref(prog)) == 0


def deny_xtiledata() -> str:
    """Refuse AMX tile data to every later request in this process (idempotent). Returns the
    state after the call; "none" where there is no AMX, and the process is left alone."""
    global _denied
    if _denied or not offered():
        return state()
    libc = _libc()
    insns = (_Insn * len(PROGRAM))(*(_Insn(*i) for i in PROGRAM))
    prog = _Prog(len(PROGRAM), insns)
    root = os.geteuid() == 0
    if not root and libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    ok = _install(libc, prog)
    err = ctypes.get_errno()
    # Root inside a container without CAP_SYS_ADMIN needs no_new_privs too.
    if not ok and root and libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        ok = _install(libc, prog)
    if not ok:
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")
    _denied = True
    return state()
