"""Backends of the local (cpu/gpu) target: one interface over exported files (through
`mnistopt.runtime`) and native models (torch, keras, tf), each imported only when used.

A backend opens a model once and returns a session with ``prepare(uint8 images)`` (outside the
clock: dtype, layout, device copy) and ``run(prepared) -> (N, 10) logits`` (the timed call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import DeviceError


@dataclass(frozen=True)
class Backend:
    name: str
    kind: str  # "artifact" (an exported file) or "native" (a run directory)
    open: Callable  # (path, threads, device) -> session
    label: str  # how the table names it
    devices: tuple = ("cpu",)
    # A native backend's library, imported by the child before the clock starts (None: the
    # framework's package, train.FRAMEWORK_PACKAGES[name]).
    package: str | None = None


BACKENDS: dict[str, Backend] = {}


def register(b: Backend) -> Backend:
    BACKENDS[b.name] = b
    return b


def _open_artifact(path, threads, device):
    from .worker import Artifact

    return Artifact(path, threads, device=device)


def _open_openvino(path, threads, device):
    """An ONNX file on OpenVINO with mnistopt.runtime's settings: the file's own arithmetic
    (f32 where the file is float), one compiled model per batch size."""
    from .worker import Artifact

    art = Artifact(path, threads, device=device, backend="openvino")
    art.via = f"mnistopt.runtime openvino: {', '.join(art.providers)}"
    return art


class _Torch:
    def __init__(self, run_dir, threads, device, graphs: bool = True):
        import torch

        from ..train import load_run
        from ..train.torch_backend import device_check

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = device_check(device)
        self.run_ = load_run(run_dir)
        self.model = self.run_.model.to(self.device).eval()
        self.threads = torch.get_num_threads()
        self.graphs = None  # CUDA: replay one captured graph per batch size (torch_cuda.py)
        if self.device.type == "cuda":
            from .torch_cuda import CudaGraphs, setup_cuda

            setup_cuda(torch)
            self.graphs = CudaGraphs(self.model) if graphs else None
            self.via = "torch eager, CUDA graphs" if graphs else "torch eager, CUDA"

    def prepare(self, images):
        from ..train import to_input

        x = self.torch.from_numpy(to_input(images, self.run_.layout)).to(self.device)
        return self.graphs.load(x) if self.graphs else x

    def run(self, x):
        # On CUDA, .cpu() is a blocking copy that waits for the queued kernels: the timed call
        # ends when the logits are on the host. On the CPU nothing waits for anything.
        if self.graphs:
            return self.graphs.forward(x).cpu().numpy()
        with self.torch.inference_mode():
            return self.model(x).cpu().numpy()


def _tf_setup(threads, device):
    import tensorflow as tf

    if threads:
        try:  # only possible before TensorFlow has run anything in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise DeviceError(f"--device gpu: TensorFlow {tf.__version__} sees no GPU "
                          "(tf.config.list_physical_devices('GPU') is empty); use --device cpu")
    return tf, ("/GPU:0" if device == "gpu" else "/CPU:0")


class _TFNative:
    """A Keras or TensorFlow run directory: TensorFlow set up once, inputs as tf constants."""

    def __init__(self, run_dir, threads, device):
        self.tf, self.dev = _tf_setup(threads, device)
        from ..train import load_run

        self.run_ = load_run(run_dir)
        self.threads = threads

    def prepare(self, images):
        from ..train import to_input

        with self.tf.device(self.dev):
            return self.tf.constant(to_input(images, self.run_.layout))

class _Keras(_TFNative):
    def __init__(self, run_dir, threads, device):
        super().__init__(run_dir, threads, device)
        with self.tf.device(self.dev):
            self.model = self.run_.model

    def run(self, x):
        # A direct call, eager: how a Keras user runs a model per request (predict() adds a
        # data-pipeline round trip of milliseconds).
        with self.tf.device(self.dev):
            return self.model(x, training=False).numpy()


class _TF(_TFNative):
    """The model's serving function, a traced tf.function graph: the one the run's SavedModel
    holds, traced here from the model rebuilt from its arch and weights (train/weights.py)."""

    def __init__(self, run_dir, threads, device):
        super().__init__(run_dir, threads, device)
        with self.tf.device(self.dev):
            self.fn = self.run_.model.serve

    def run(self, x):
        with self.tf.device(self.dev):
            return self.fn(x)["logits"].numpy()


register(Backend("onnxruntime", "artifact", _open_artifact, "onnxruntime", ("cpu", "gpu")))
register(Backend("litert", "artifact", _open_artifact, "LiteRT", ("cpu",)))
register(Backend("openvino", "artifact", _open_openvino, "OpenVINO", ("cpu",)))
register(Backend("torch", "native", _Torch, "torch eager", ("cpu", "gpu")))
register(Backend("keras", "native", _Keras, "keras eager", ("cpu", "gpu")))
register(Backend("tf", "native", _TF, "tf.function", ("cpu", "gpu")))


def _peer(cls: str):
    """A peer's session class in peer_backends.py, imported when a model is opened with it."""
    def open_(path, threads, device):
        from . import peer_backends

        return getattr(peer_backends, cls)(path, threads, device)
    return open_


# The peers' runners (mnistopt/peers/): the tools mnistopt is compared with.
register(Backend("onnxruntime-plain", "artifact", _peer("PlainOnnx"), "onnxruntime (defaults)"))
register(Backend("openvino-defaults", "artifact", _peer("OpenVINO"), "OpenVINO (defaults)"))
register(Backend("torch-compile", "native", _peer("TorchCompile"), "torch.compile",
                 ("cpu", "gpu"), package="torch"))
register(Backend("executorch", "native", _peer("ExecuTorch"), "ExecuTorch/XNNPACK",
                 package="executorch"))

# Which native backend runs a run directory of each framework.
NATIVE_FOR_FRAMEWORK = {"torch": "torch", "keras": "keras", "tf": "tf"}
# The runtimes each format's files are benched on. The first is the format's own, on every
# target; the others are optional runtime backends that the cpu target also runs each of
# mnistopt's files on where their package is installed (`RUNTIME_PACKAGES`), so that the
# report's `recommended` can name them where they win (OpenVINO's int8 convolutions at large
# batches, for one). Their rows' ids are FILE@RUNTIME.
ARTIFACT_RUNTIMES = {".onnx": ("onnxruntime", "openvino"), ".tflite": ("litert",)}
ARTIFACT_BACKEND = {suffix: names[0] for suffix, names in ARTIFACT_RUNTIMES.items()}
RUNTIME_PACKAGES = {"openvino": "openvino"}


def get_backend(name: str) -> Backend:
    from ..errors import ConfigError

    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}") from None


def logits_all(session, images, chunk: int = 500):
    import numpy as np

    out = [np.asarray(session.run(session.prepare(images[i:i + chunk])))
           for i in range(0, len(images), chunk)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)
