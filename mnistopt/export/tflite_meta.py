"""The mnistopt JSON inside a .tflite flatbuffer, as a metadata entry named "mnistopt".

Uses the flatbuffer schema that ai-edge-litert ships (no TensorFlow). Metadata entries are
ignored by interpreters, so the model computes exactly what it computed before.
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
    from ai_edge_litert import schema_py_generated as fb

    data = Path(path).read_bytes()
    model = fb.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if _name(m.Name()) == KEY:
            return json.loads(model.Buffers(m.Buffer()).DataAsNumpy().tobytes())
    return None


def _name(n) -> str:
    return n.decode() if isinstance(n, bytes) else str(n)
