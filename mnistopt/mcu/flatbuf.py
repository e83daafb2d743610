"""A small pure-Python reader for the TFLite flatbuffer: operators, tensors, buffers.

Enough of the schema (tensorflow/lite/schema/schema.fbs) to say what a model needs on a
microcontroller, without TensorFlow, LiteRT or the flatbuffers package: the operator codes,
each tensor's type, shape and quantization, and which tensors are constants (weights).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

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


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    buffer: int
    constant: bool  # its buffer holds data: a weight or bias baked into the file
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()


@dataclass
class Operator:
    name: str  # BuiltinOperator name, or the custom code for CUSTOM
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class TFLiteModel:
    version: int
    operators: list[Operator]  # of the main subgraph, in execution order
    tensors: list[Tensor]  # of the main subgraph
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    weight_bytes: int  # bytes of constant data (all buffers)
    op_codes: list[str] = field(default_factory=list)  # every distinct operator, all subgraphs

    @property
    def op_names(self) -> list[str]:
        """Distinct operators in first-use order."""
        return list(dict.fromkeys(self.op_codes))


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = buf

    def u8(self, pos): return self.buf[pos]
    def i8(self, pos): return struct.unpack_from("<b", self.buf, pos)[0]
    def u16(self, pos): return struct.unpack_from("<H", self.buf, pos)[0]
    def i32(self, pos): return struct.unpack_from("<i", self.buf, pos)[0]
    def u32(self, pos): return struct.unpack_from("<I", self.buf, pos)[0]
    def u64(self, pos): return struct.unpack_from("<Q", self.buf, pos)[0]

    def field(self, table: int, slot: int) -> int | None:
        """Absolute position of field `slot` of the table at `table`, None when absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        at = 4 + 2 * slot
        if at >= vsize:
            return None
        off = self.u16(vtable + at)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def scalar(self, table, slot, fmt, default=0):
        pos = self.field(table, slot)
        return default if pos is None else struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def vector(self, table, slot) -> tuple[int, int]:
        """(start of the elements, length); (0, 0) when absent."""
        pos = self.field(table, slot)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        return vec + 4, self.u32(vec)

    def scalars(self, table, slot, fmt) -> tuple:
        start, n = self.vector(table, slot)
        return struct.unpack_from(f"<{n}{fmt}", self.buf, start) if n else ()

    def tables(self, table, slot) -> list[int]:
        start, n = self.vector(table, slot)
        return [self.deref(start + 4 * i) for i in range(n)]

    def string(self, table, slot) -> str:
        pos = self.field(table, slot)
        if pos is None:
            return ""
        s = self.deref(pos)
        return self.buf[s + 4: s + 4 + self.u32(s)].decode("utf-8", "replace")


def is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == b"TFL3"


def read_tflite(data: bytes, name: str = "model") -> TFLiteModel:
    """Parse a .tflite file's bytes; ModelLoadError when it is not one or is truncated."""
    if not is_tflite(data):
        raise ModelLoadError(f"{name} is not a TFLite model (no 'TFL3' file identifier); "
                             "give a .tflite file written by `mnistopt export`")
    try:
        return _parse(_Reader(data))
    except (struct.error, IndexError, ValueError) as exc:
        raise ModelLoadError(f"{name} is a truncated or corrupt TFLite file ({exc})") from None


def _op_name(r: _Reader, code: int) -> str:
    # builtin_code (slot 3) superseded the int8 deprecated_builtin_code (slot 0) at 127 ops;
    # the real code is the larger of the two (as the TFLite runtime reads it).
    builtin = max(r.scalar(code, 0, "b"), r.scalar(code, 3, "i"))
    if builtin == 32:  # CUSTOM
        return r.string(code, 1) or "CUSTOM"
    return BUILTIN_OPS[builtin] if 0 <= builtin < len(BUILTIN_OPS) else f"BUILTIN_{builtin}"


def _parse(r: _Reader) -> TFLiteModel:
    root = r.deref(0)
    version = r.scalar(root, 0, "I")
    codes = [_op_name(r, c) for c in r.tables(root, 1)]
    buffers = r.tables(root, 4)
    sizes = []
    for b in buffers:
        _, n = r.vector(b, 0)
        # Models over 2 GB keep data after the flatbuffer: Buffer.offset/size (slots 1, 2).
        sizes.append(n or (r.scalar(b, 2, "Q") if r.scalar(b, 1, "Q") > 1 else 0))
    subgraphs = r.tables(root, 2)
    if not subgraphs:
        raise ValueError("no subgraph")
    all_codes = []
    for sg in subgraphs:
        all_codes += [codes[r.scalar(op, 0, "I")] for op in r.tables(sg, 3)]
    sg = subgraphs[0]
    tensors = []
    for i, t in enumerate(r.tables(sg, 0)):
        type_code = r.scalar(t, 1, "b")
        buf = r.scalar(t, 2, "I")
        q = r.field(t, 4)
        scale = zp = ()
        if q is not None:
            q = r.deref(q)
            scale, zp = r.scalars(q, 2, "f"), r.scalars(q, 3, "q")
        tensors.append(Tensor(
            index=i, name=r.string(t, 3),
            dtype=TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"type{type_code}",
            shape=tuple(r.scalars(t, 0, "i")), buffer=buf,
            constant=0 < buf < len(sizes) and sizes[buf] > 0, scale=tuple(scale), zero_point=tuple(zp)))
    ops = [Operator(codes[r.scalar(op, 0, "I")], tuple(r.scalars(op, 1, "i")),
                    tuple(r.scalars(op, 2, "i"))) for op in r.tables(sg, 3)]
    return TFLiteModel(version=version, operators=ops, tensors=tensors,
                       inputs=tuple(r.scalars(sg, 1, "i")), outputs=tuple(r.scalars(sg, 2, "i")),
                       subgraphs=len(subgraphs), weight_bytes=sum(sizes), op_codes=all_codes)
