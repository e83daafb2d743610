"""Run an exported file on uint8 images, straight through onnxruntime / ai_edge_litert.

Validation needs only this much: read the model's own I/O (name, shape, layout, dtype,
quantization), feed pixels / 255 in that layout (quantized when the input is integer), and
dequantize integer outputs. One session / interpreter per file, reused for every batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelLoadError


def _layout(shape) -> str:
    if len(shape) == 4 and shape[1] == 1:
        return "NCHW"
    if len(shape) == 4 and shape[3] == 1:
        return "NHWC"
    if len(shape) == 3:
        return "NHW"
    raise ModelLoadError(f"model input shape {list(shape)} is not an MNIST image batch")


def _prepare(images: np.ndarray, layout: str, dtype, scale, zero_point) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    x = x[:, None] if layout == "NCHW" else x[..., None] if layout == "NHWC" else x
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


class OnnxRunner:
    def __init__(self, path: Path):
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ModelLoadError(f"{path}: onnxruntime cannot load it ({exc})") from None
        i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
        shape = [d if isinstance(d, int) else -1 for d in i.shape]
        out_shape = [d if isinstance(d, int) else -1 for d in o.shape]
        dt = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
              "tensor(float16)": "float16"}
        self.io = {
            "input": {"name": i.name, "shape": shape, "layout": _layout(shape),
                      "dtype": dt.get(i.type, i.type), "range": [0.0, 1.0],
                      "scale": None, "zero_point": None},
            "output": {"name": o.name, "shape": out_shape, "dtype": dt.get(o.type, o.type),
                       "scale": None, "zero_point": None, "kind": "logits"},
        }
        self.batch = shape[0]

    def logits(self, images: np.ndarray) -> np.ndarray:
        inp = self.io["input"]
        x = _prepare(images, inp["layout"], np.dtype(inp["dtype"]), None, None)
        if self.batch > 0:  # a fixed batch size: feed it that many at a time
            return np.concatenate([self.session.run(None, {inp["name"]: x[j:j + self.batch]})[0]
                                   for j in range(0, len(x), self.batch)]).astype(np.float32)
        return self.session.run(None, {inp["name"]: x})[0].astype(np.float32)


class TfliteRunner:
    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interp = Interpreter(model_path=str(path), num_threads=threads)
        except Exception as exc:
            raise ModelLoadError(f"{path}: LiteRT cannot load it ({exc})") from None
        i, o = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        sig = [int(d) for d in i.get("shape_signature", i["shape"])]
        out_sig = [int(d) for d in o.get("shape_signature", o["shape"])]
        self._in, self._out = i, o

        def q(d):
            scale, zp = d["quantization"]
            integer = np.issubdtype(d["dtype"], np.integer)
            return (float(scale), int(zp)) if integer else (None, None)

        (s_in, z_in), (s_out, z_out) = q(i), q(o)
        self.io = {
            "input": {"name": i["name"], "shape": sig, "layout": _layout(sig),
                      "dtype": np.dtype(i["dtype"]).name, "range": [0.0, 1.0],
                      "scale": s_in, "zero_point": z_in},
            "output": {"name": o["name"], "shape": out_sig, "dtype": np.dtype(o["dtype"]).name,
                       "scale": s_out, "zero_point": z_out, "kind": "logits"},
        }
        self._batch = None
        self.interp.allocate_tensors()

    def _resize(self, n: int) -> None:
        if self._batch != n:
            self.interp.resize_tensor_input(self._in["index"], [n] + list(self._in["shape"][1:]))
            self.interp.allocate_tensors()
            self._batch = n

    def logits(self, images: np.ndarray) -> np.ndarray:
        inp, out = self.io["input"], self.io["output"]
        x = _prepare(images, inp["layout"], np.dtype(inp["dtype"]), inp["scale"], inp["zero_point"])
        # A free batch dim takes the whole batch at once; a fixed one is fed image by image.
        step = len(x) if inp["shape"][0] == -1 else inp["shape"][0]
        outs = []
        for j in range(0, len(x), step):
            xb = x[j:j + step]
            if inp["shape"][0] == -1:
                self._resize(len(xb))
            self.interp.set_tensor(self._in["index"], xb)
            self.interp.invoke()
            outs.append(self.interp.get_tensor(self._out["index"]).copy())
        y = np.concatenate(outs).astype(np.float32)
        if out["scale"] is not None:
            y = (y - out["zero_point"]) * out["scale"]
        return y


def runner(path: Path):
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    return TfliteRunner(path) if path.suffix == ".tflite" else OnnxRunner(path)


def logits(path_or_runner, images: np.ndarray, batch: int = 1000, advance=None) -> np.ndarray:
    """Logits (N, 10) of a model file (or a runner) on uint8 images, `batch` at a time."""
    r = runner(path_or_runner) if isinstance(path_or_runner, (str, Path)) else path_or_runner
    out = []
    for j in range(0, len(images), batch):
        out.append(r.logits(images[j:j + batch]))
        if advance:
            advance(len(images[j:j + batch]))
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)
