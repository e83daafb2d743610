"""The one reader of TFLite flatbuffers: pure Python (stdlib only), bounded, hostile-input safe.

Enough of tensorflow/lite/schema/schema.fbs for what the project reads from a .tflite, without
TensorFlow, LiteRT or the flatbuffers package: operators, each tensor's type, shape and
quantization, which tensors are constants (weights), the named metadata entries and the
signatures. Every offset is checked against the file before it is followed, and the elements
read in all are capped by the file's size (vectors may overlap, so lengths alone would not bound
the work): a truncated or crafted file is a ModelLoadError from `read_tflite`, or {} from
`tflite_metadata` (metadata is optional), never an out-of-range read or a runaway allocation.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from ..errors import ModelLoadError

# BuiltinOperator, by code (schema.fbs; append-only, so older codes never change). Generated
# from tflite-micro's schema_py_generated; codes past the end print as BUILTIN_<code>.
BUILTIN_OPS = """
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
    EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
    LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1
    RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS
    SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
    BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
    UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT
    LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG
    PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
    EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD
    REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV
    REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU
    SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE
    RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
    NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM
    BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D
    IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL
    CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
    RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE
    RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
    UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD
    STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP
    STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE
    STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE
    STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE
    STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT
    STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
    STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA
    STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE
    STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW
    STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split()

# TensorType, by code (schema.fbs).
TENSOR_TYPES = ("float32 float16 int32 uint8 int64 string bool int16 complex64 int8 float64 "
                "complex128 uint64 resource variant uint32 uint16 int4 bfloat16 int2 uint4 "
                "float8_e4m3fn float8_e5m2").split()
FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16", "float8_e4m3fn", "float8_e5m2"}

# Field slots (schema.fbs declaration order) of the tables read here.
_MODEL = {"version": 0, "operator_codes": 1, "subgraphs": 2, "buffers": 4, "metadata": 6,
          "signature_defs": 7}
_TENSOR = {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4,
           "shape_signature": 7}

_U8, _I8, _U16 = struct.Struct("<B"), struct.Struct("<b"), struct.Struct("<H")
_I32, _U32, _U64 = struct.Struct("<i"), struct.Struct("<I"), struct.Struct("<Q")
_ELEM = {"b": 1, "B": 1, "i": 4, "I": 4, "f": 4, "q": 8}


class FlatbufferError(ValueError):
    """An offset or length that does not fit the file."""


class Tensor:
    __slots__ = ("index", "name", "dtype", "shape", "shape_signature", "buffer", "constant",
                 "scale", "zero_point")

    def __init__(self, index, name, dtype, shape, shape_signature, buffer, constant, scale=(),
                 zero_point=()):
        self.index, self.name, self.dtype = index, name, dtype
        self.shape = shape  # tuple of ints, as stored
        self.shape_signature = shape_signature  # -1 where free (the batch); () when absent
        self.buffer = buffer
        self.constant = constant  # its buffer holds data: a weight or bias baked into the file
        self.scale, self.zero_point = scale, zero_point  # per tensor or per channel

    def __repr__(self) -> str:
        return f"Tensor({self.index}, {self.name!r}, {self.dtype}, {self.shape})"


class Operator:
    __slots__ = ("name", "inputs", "outputs")

    def __init__(self, name: str, inputs: tuple, outputs: tuple):
        self.name = name  # BuiltinOperator name, or the custom code for CUSTOM
        self.inputs, self.outputs = inputs, outputs


class TFLiteModel:
    """What `read_tflite` found: the main subgraph in detail, a summary of the rest."""

    def __init__(self, version, operators, tensors, inputs, outputs, subgraphs, weight_bytes,
                 op_codes, metadata, signatures):
        self.version = version
        self.operators: list[Operator] = operators  # main subgraph, execution order
        self.tensors: list[Tensor] = tensors  # main subgraph
        self.inputs, self.outputs = inputs, outputs  # tensor indices
        self.subgraphs = subgraphs  # how many
        self.weight_bytes = weight_bytes  # bytes of constant data (all buffers)
        self.op_codes: list[str] = op_codes  # every operator use, all subgraphs
        self.metadata: dict[str, bytes] = metadata  # named entries, raw bytes
        self.signatures: dict[str, dict] = signatures  # key -> {"inputs": [...], "outputs": [...]}

    @property
    def op_names(self) -> list[str]:
        """Distinct operators in first-use order."""
        return list(dict.fromkeys(self.op_codes))


class _Reader:
    """Bounds-checked access to a flatbuffer; `budget` caps the elements read in all."""

    def __init__(self, buf):
        self.buf, self.size = buf, len(buf)
        self.budget = 2 * self.size + 65536

    def _spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise FlatbufferError("the file's vectors overlap beyond its size")

    def _get(self, st: struct.Struct, pos: int):
        if pos < 0 or pos + st.size > self.size:
            raise FlatbufferError(f"offset {pos} is outside the {self.size}-byte file")
        return st.unpack_from(self.buf, pos)[0]

    def deref(self, pos: int) -> int:
        return pos + self._get(_U32, pos)

    def root(self) -> int:
        return self.deref(0)

    def field(self, table: int, slot: int) -> int | None:
        """Absolute position of field `slot` of the table at `table`, None when absent."""
        vtable = table - self._get(_I32, table)
        vsize = self._get(_U16, vtable)
        at = 4 + 2 * slot
        if at + 2 > vsize:
            return None
        off = self._get(_U16, vtable + at)
        return table + off if off else None

    def scalar(self, table: int, slot: int, st: struct.Struct, default=0):
        pos = self.field(table, slot)
        return default if pos is None else self._get(st, pos)

    def vector(self, table: int, slot: int, elem: int) -> tuple[int, int]:
        """(start of the elements, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, slot)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        n = self._get(_U32, vec)
        if vec + 4 + n * elem > self.size:
            raise FlatbufferError(f"a {n}-element vector runs past the end of the file")
        self._spend(n)
        return vec + 4, n

    def scalars(self, table: int, slot: int, fmt: str) -> tuple:
        start, n = self.vector(table, slot, _ELEM[fmt])
        return struct.unpack_from(f"<{n}{fmt}", self.buf, start) if n else ()

    def tables(self, table: int, slot: int) -> list[int]:
        start, n = self.vector(table, slot, 4)
        return [self.deref(start + 4 * i) for i in range(n)]

    def bytes_(self, table: int, slot: int) -> bytes | None:
        if self.field(table, slot) is None:
            return None
        start, n = self.vector(table, slot, 1)
        return bytes(self.buf[start:start + n])

    def string(self, table: int, slot: int) -> str:
        data = self.bytes_(table, slot)
        return "" if data is None else data.decode("utf-8", "replace")

    def span(self, offset: int, size: int) -> bytes:
        """Bytes [offset, offset + size) of the file (buffers stored after the flatbuffer)."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise FlatbufferError(f"a {size}-byte buffer at {offset} is outside the file")
        self._spend(size)
        return bytes(self.buf[offset:offset + size])


def is_tflite(data) -> bool:
    return len(data) >= 8 and data[4:8] == b"TFL3"


def _buffer_size(r: _Reader, b: int) -> int:
    _, n = r.vector(b, 0, 1)
    # Models over 2 GB keep data after the flatbuffer: Buffer.offset/size (slots 1, 2).
    return n or (r.scalar(b, 2, _U64) if r.scalar(b, 1, _U64) > 1 else 0)


def _buffer_data(r: _Reader, b: int) -> bytes:
    data = r.bytes_(b, 0)
    if data:
        return data
    offset, size = r.scalar(b, 1, _U64), r.scalar(b, 2, _U64)
    return r.span(offset, size) if offset > 1 else b""


def _metadata(r: _Reader, root: int) -> dict[str, bytes]:
    """Model.metadata -> {name: Buffer data}; entries pointing at no buffer are skipped."""
    buffers = r.tables(root, _MODEL["buffers"])
    out = {}
    for entry in r.tables(root, _MODEL["metadata"]):
        idx = r.scalar(entry, 1, _U32, None)
        if idx is None or idx >= len(buffers):
            continue
        out[r.string(entry, 0)] = _buffer_data(r, buffers[idx])
    return out


def _signatures(r: _Reader, root: int) -> dict[str, dict]:
    """SignatureDef key -> the names of its inputs and outputs, in file order."""
    out = {}
    for sig in r.tables(root, _MODEL["signature_defs"]):
        out[r.string(sig, 2)] = {kind: [r.string(m, 0) for m in r.tables(sig, slot)]
                                 for kind, slot in (("inputs", 0), ("outputs", 1))}
    return out


def _op_name(r: _Reader, code: int) -> str:
    # builtin_code (slot 3) superseded the int8 deprecated_builtin_code (slot 0) at 127 ops;
    # the real code is the larger of the two (as the TFLite runtime reads it).
    builtin = max(r.scalar(code, 0, _I8), r.scalar(code, 3, _I32))
    if builtin == 32:  # CUSTOM
        return r.string(code, 1) or "CUSTOM"
    return BUILTIN_OPS[builtin] if 0 <= builtin < len(BUILTIN_OPS) else f"BUILTIN_{builtin}"


def _tensor(r: _Reader, i: int, t: int, sizes: list[int]) -> Tensor:
    type_code = r.scalar(t, _TENSOR["type"], _I8)
    buf = r.scalar(t, _TENSOR["buffer"], _U32)
    q = r.field(t, _TENSOR["quantization"])
    scale = zp = ()
    if q is not None:
        q = r.deref(q)
        scale, zp = r.scalars(q, 2, "f"), r.scalars(q, 3, "q")
    return Tensor(
        index=i, name=r.string(t, _TENSOR["name"]),
        dtype=TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"type{type_code}",
        shape=tuple(r.scalars(t, _TENSOR["shape"], "i")),
        shape_signature=tuple(r.scalars(t, _TENSOR["shape_signature"], "i")), buffer=buf,
        constant=0 < buf < len(sizes) and sizes[buf] > 0, scale=tuple(scale), zero_point=tuple(zp))


def _opcode(codes: list[str], index: int) -> str:
    if not 0 <= index < len(codes):
        raise FlatbufferError(f"operator code {index} of {len(codes)}")
    return codes[index]


def _parse(r: _Reader) -> TFLiteModel:
    root = r.root()
    codes = [_op_name(r, c) for c in r.tables(root, _MODEL["operator_codes"])]
    sizes = [_buffer_size(r, b) for b in r.tables(root, _MODEL["buffers"])]
    subgraphs = r.tables(root, _MODEL["subgraphs"])
    if not subgraphs:
        raise FlatbufferError("no subgraph")
    all_codes = [_opcode(codes, r.scalar(op, 0, _U32)) for sg in subgraphs
                 for op in r.tables(sg, 3)]
    sg = subgraphs[0]
    tensors = [_tensor(r, i, t, sizes) for i, t in enumerate(r.tables(sg, 0))]
    ops = [Operator(_opcode(codes, r.scalar(op, 0, _U32)), tuple(r.scalars(op, 1, "i")),
                    tuple(r.scalars(op, 2, "i"))) for op in r.tables(sg, 3)]
    inputs, outputs = tuple(r.scalars(sg, 1, "i")), tuple(r.scalars(sg, 2, "i"))
    if any(not 0 <= k < len(tensors) for k in inputs + outputs):
        raise FlatbufferError("a subgraph input or output names no tensor")
    return TFLiteModel(
        version=r.scalar(root, _MODEL["version"], _U32), operators=ops, tensors=tensors,
        inputs=inputs, outputs=outputs, subgraphs=len(subgraphs), weight_bytes=sum(sizes),
        op_codes=all_codes, metadata=_metadata(r, root),
        signatures=_signatures(r, root))


# Ops whose multiply-adds dominate a ConvNet: (output positions per image) x (weight elements),
# input 1 holding the weights ([O, kh, kw, I], [1, kh, kw, C] or [O, I]).
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def mac_split(model: TFLiteModel) -> tuple[int, int]:
    """(float, integer) multiply-adds per image of the main subgraph's convolutions and dense
    layers, each counted by its output's type: an op that dequantizes int8 weights and writes
    float computes in float."""
    fl = it = 0
    for op in model.operators:
        if op.name not in MAC_OPS or len(op.inputs) < 2 or op.inputs[1] < 0 or not op.outputs:
            continue
        out, w = model.tensors[op.outputs[0]], model.tensors[op.inputs[1]]
        n = _prod(out.shape[1:-1]) * _prod(w.shape)
        if out.dtype in FLOAT_TYPES:
            fl += n
        else:
            it += n
    return fl, it


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= max(int(d), 1)  # an unknown (-1) dimension counts once
    return n


def read_tflite(data, name: str = "model") -> TFLiteModel:
    """Parse a .tflite file's bytes; ModelLoadError when it is not one or is truncated."""
    if not is_tflite(data):
        raise ModelLoadError(f"{name} is not a TFLite model (no 'TFL3' file identifier); "
                             "give a .tflite file written by `mnistopt export`")
    try:
        return _parse(_Reader(data))
    except (FlatbufferError, struct.error, IndexError, ValueError) as exc:
        raise ModelLoadError(f"{name} is a truncated or corrupt TFLite file ({exc})") from None


def tflite_metadata(path) -> dict[str, str]:
    """The file's named metadata entries that hold UTF-8 text (e.g. "mnistopt" JSON).

    Maps the file rather than reading it (only the metadata's pages are touched); anything
    unexpected yields {}: metadata is optional, and the model's own tensors say the rest.
    """
    try:
        with open(Path(path), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if not is_tflite(m):
                return {}
            r = _Reader(m)
            raw = _metadata(r, r.root())
    except (OSError, FlatbufferError, struct.error, IndexError, ValueError):
        return {}
    out = {}
    for key, data in raw.items():
        try:
            out[key] = data.decode("utf-8")
        except UnicodeDecodeError:
            pass  # binary metadata (min_runtime_version is text; others may not be)
    return out
