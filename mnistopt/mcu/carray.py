"""An int8 .tflite as a C source/header pair to compile into firmware.

`NAME.h` declares the array and its length and defines the input/output scale and zero point,
the tensor arena TFLite Micro measured and a macro that registers exactly the operators the
model uses; `NAME.c` holds the bytes, 16-byte aligned (TFLite Micro reads the flatbuffer in
place and its int8 kernels expect aligned weights). Both compile as C99/C11 and as C++.
`read_c_array` parses the bytes back, for the round-trip check.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError, McuError
from ..fsutil import write_text

_HEADER = """\
/* {name}.h: {source} as a C array, written by mnistopt (do not edit).
 *
 * {flash} bytes of flash. Input {inp}, output {out}.
 * Operators: {ops}.
 *
 *   #include "{name}.h"
 *   static uint8_t arena[{upper}_ARENA_SIZE] __attribute__((aligned(16)));
 *   const tflite::Model* model = tflite::GetModel({name});
 *   static tflite::MicroMutableOpResolver<{upper}_NUM_OPS> resolver;
 *   {upper}_REGISTER_OPS(resolver);
 *   tflite::MicroInterpreter interpreter(model, resolver, arena, sizeof(arena));
 *
 * input  q = round(x / {upper}_INPUT_SCALE) + {upper}_INPUT_ZERO_POINT  (x: pixel / 255)
 * output x = (q - {upper}_OUTPUT_ZERO_POINT) * {upper}_OUTPUT_SCALE
 */
#ifndef {guard}
#define {guard}

#ifdef __cplusplus
extern "C" {{
#endif

#define {upper}_LEN {flash}u
#define {upper}_INPUT_SCALE {in_scale}
#define {upper}_INPUT_ZERO_POINT {in_zp}
#define {upper}_OUTPUT_SCALE {out_scale}
#define {upper}_OUTPUT_ZERO_POINT {out_zp}
#define {upper}_NUM_CLASSES {classes}
/* {arena_note} */
#define {upper}_ARENA_SIZE {arena}u
#define {upper}_NUM_OPS {n_ops}
#define {upper}_REGISTER_OPS(resolver) do {{ {register} }} while (0)

extern const unsigned char {name}[];
extern const unsigned int {name}_len;

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""

_SOURCE = """\
/* {name}.c: {source} ({flash} bytes, sha256 {sha}), written by mnistopt (do not edit). */
#include "{name}.h"

/* TFLite Micro reads the model in place: keep it 16-byte aligned. */
#if defined(__cplusplus)
#define {upper}_ALIGN alignas(16)
#elif defined(__GNUC__) || defined(__clang__)
#define {upper}_ALIGN __attribute__((aligned(16)))
#elif defined(_MSC_VER)
#define {upper}_ALIGN __declspec(align(16))
#else
#include <stdalign.h>
#define {upper}_ALIGN alignas(16)
#endif

{upper}_ALIGN const unsigned char {name}[{flash}] = {{
{body}
}};
const unsigned int {name}_len = {flash}u;
"""

# MicroMutableOpResolver's Add* methods are the operator names in CamelCase, but for these.
_RESOLVER_EXCEPTIONS = {"PADV2": "AddPadV2", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
                        "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D"}


def resolver_method(op: str) -> str:
    """CONV_2D -> AddConv2D, the MicroMutableOpResolver method that registers `op`."""
    if op in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[op]
    return "Add" + "".join(p if p[0].isdigit() else p.capitalize() for p in op.split("_"))


def symbol_for(path: Path) -> str:
    """A C identifier from a file name: 'edge-keras-int8.tflite' -> 'edge_keras_int8'."""
    sym = re.sub(r"\W", "_", path.stem).strip("_") or "model"
    return "m_" + sym if sym[0].isdigit() else sym


def _c_float(x: float | None) -> str:
    return "0.0f" if x is None else f"{float(x):.9g}f".replace("inf", "INFINITY")


def write_c_array(model_path: str | Path, out_dir: str | Path, name: str | None = None,
                  arena: int | None = None) -> tuple[Path, Path]:
    """Write NAME.h and NAME.c for an int8 .tflite; returns (header, source).

    `arena` is the tensor arena to declare; when None it is measured in TFLite Micro if the
    `mcu` extra is installed (rounded up to 16 bytes), else left 0 with a note.
    """
    import hashlib

    from .micro import inspect

    model_path = Path(model_path)
    report = inspect(model_path)  # parses the file and refuses a float model
    if report.missing_ops:
        raise McuError(f"{model_path} uses operators TFLite Micro has no kernel for: "
                       f"{', '.join(report.missing_ops)}")
    name = name or symbol_for(model_path)
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ConfigError(f"--name {name!r} is not a C identifier")
    data = model_path.read_bytes()
    # Measured on a 64-bit host: the persistent part holds pointer-sized structs, so a 32-bit
    # MCU needs a little less; the activation part is the same. An upper bound, then.
    arena_note = ("Tensor arena TFLite Micro allocated for this model, measured on a 64-bit host "
                  "(rounded to 16; a 32-bit MCU needs slightly less).")
    if arena is None:
        arena, arena_note = _measure_arena(model_path, arena_note)
    upper = name.upper()

    def io(t):
        return f"{t.dtype}{list(t.shape)}" + (f" scale {t.scale:.6g} zero point {t.zero_point}"
                                               if t.scale is not None else "")

    fields = dict(
        name=name, upper=upper, guard=f"{upper}_H_", source=model_path.name, flash=len(data),
        sha=hashlib.sha256(data).hexdigest(), inp=io(report.input), out=io(report.output),
        ops=", ".join(report.ops), in_scale=_c_float(report.input.scale),
        in_zp=f"({report.input.zero_point or 0})", out_scale=_c_float(report.output.scale),
        out_zp=f"({report.output.zero_point or 0})", classes=report.output.shape[-1],
        arena=arena, arena_note=arena_note, n_ops=len(report.ops),
        register=" ".join(f"(resolver).{resolver_method(op)}();" for op in report.ops),
        body=_hex_lines(data))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, source = out_dir / f"{name}.h", out_dir / f"{name}.c"
    write_text(header, _HEADER.format(**fields))
    write_text(source, _SOURCE.format(**fields))
    return header, source


def _measure_arena(model_path: Path, note: str) -> tuple[int, str]:
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        return 0, "Not measured (pip install 'mnistopt[mcu]' and export again): size it yourself."
    import numpy as np

    from ..runtime import open_backend

    backend = open_backend(model_path, "tflite-micro")
    backend.run(np.zeros(tuple(max(d, 1) for d in backend.input.shape), backend.input.dtype))
    total = backend.arena_usage()["total"]
    return (total + 15) // 16 * 16, note


def _hex_lines(data: bytes, per_line: int = 12) -> str:
    return "\n".join("  " + ", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) + ","
                     for i in range(0, len(data), per_line))


def read_c_array(source: str | Path) -> bytes:
    """The bytes of the array in a source written by `write_c_array` (round-trip check)."""
    text = Path(source).read_text()
    m = re.search(r"const unsigned char \w+\[(\d+)\] = \{(.*?)\};", text, re.S)
    if not m:
        raise McuError(f"{source}: no 'const unsigned char NAME[N] = {{...}};' array found")
    data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", m.group(2)))
    if len(data) != int(m.group(1)):
        raise McuError(f"{source}: the array declares {m.group(1)} bytes but holds {len(data)}")
    return data
