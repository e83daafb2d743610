"""The mnistopt JSON inside a .tflite flatbuffer, as a metadata entry named "mnistopt".

Written with the flatbuffer schema that ai-edge-litert ships (no TensorFlow), read back with
the runtime's own flatbuffer reader. Metadata entries are ignored by interpreters, so the
model computes exactly what it computed before.
"""

from __future__ import annotations

import json
from pathlib import Path

KEY = "mnistopt"


def embed(src: Path, dst: Path, meta: dict) -> None:
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(src).read_bytes()))
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != KEY]
    buf = fb.BufferT()
    buf.data = bytearray(json.dumps(meta, sort_keys=True).encode())
    model.buffers.append(buf)
    entry = fb.MetadataT()
    entry.name = KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    Path(dst).write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_embedded(path: Path) -> dict | None:
    from ..runtime.flatbuf import tflite_metadata

    text = tflite_metadata(path).get(KEY)
    return None if text is None else json.loads(text)


def _name(n) -> str:
    return n.decode() if isinstance(n, bytes) else str(n)
