"""The peers, by name: what each is, what builds it, what runs it, what it needs installed.

Standard library only: the bench lists and checks peers without importing any of their tools.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata

from ..errors import ConfigError


@dataclass(frozen=True)
class Peer:
    name: str
    quant: str  # fp32 | int8: what the file holds
    format: str  # onnx | ir | pte | native: how the record names it
    backend: str  # the key in mnistopt/targets/backends.py that runs it in the bench's child
    builder: str | None  # "module:function" below mnistopt.peers; None: nothing to build
    modules: tuple  # top-level modules it needs (to build and to run)
    extra: str  # the pip extra that installs them
    tools: tuple  # distributions whose versions name the tool in the report
    how: str  # one line for the report: what a user of that tool does
    # "module:function" (ctx) -> a fingerprint of the files it is built from besides the
    # run's native model; a cached build with another fingerprint is rebuilt. None: none.
    inputs: str | None = None
    cache: bool = True  # False: the builder only points at a file, run it every time


_TUTORIAL = ("torch", "onnxscript", "onnxruntime")
PEERS: dict[str, Peer] = {p.name: p for p in (
    Peer("torch-compile", "fp32", "native", "torch-compile", None, ("torch",), "torch",
         ("torch",), "torch.compile(model) on the run's native model: inductor, mode 'default' "
         "(its compile time is reported apart, never in a latency)"),
    Peer("tutorial-fp32", "fp32", "onnx", "onnxruntime-plain", "onnx_peers:tutorial_fp32",
         _TUTORIAL, "export", ("torch", "onnxruntime"),
         "torch.onnx.export(model, x, f, dynamic_axes={batch}), defaults otherwise; "
         "an onnxruntime session with its default options"),
    Peer("tutorial-int8", "int8", "onnx", "onnxruntime-plain", "onnx_peers:tutorial_int8",
         _TUTORIAL, "export", ("torch", "onnxruntime"),
         "quantize_static(tutorial-fp32, out, reader) with its defaults (QDQ, int8 activations "
         "and weights, per-tensor, MinMax) on the 512 calibration images; default session"),
    Peer("openvino-fp32", "fp32", "onnx", "openvino-defaults", "onnx_peers:openvino_source",
         ("openvino",), "openvino", ("openvino",),
         "OpenVINO CPU plugin (its defaults: precision hint, latency mode) on mnistopt's fp32 "
         "ONNX file, compiled per batch size", cache=False),
    Peer("openvino-nncf-int8", "int8", "ir", "openvino-defaults", "onnx_peers:nncf_int8",
         ("openvino", "nncf"), "peers", ("openvino", "nncf"),
         "nncf.quantize (defaults, subset_size=512) of mnistopt's fp32 ONNX read by OpenVINO, "
         "the 512 calibration images; openvino.save_model IR; OpenVINO CPU plugin",
         inputs="onnx_peers:openvino_source_sha256"),
    Peer("executorch-fp32", "fp32", "pte", "executorch", "executorch_peers:build_fp32",
         ("torch", "executorch"), "peers", ("executorch",),
         "torch.export + to_edge_transform_and_lower(XnnpackPartitioner), one .pte per batch "
         "size (fixed shapes)"),
    Peer("executorch-int8", "int8", "pte", "executorch", "executorch_peers:build_int8",
         ("torch", "executorch", "torchao"), "peers", ("executorch", "torchao"),
         "PT2E: prepare_pt2e(XNNPACKQuantizer, symmetric per-channel), the 512 calibration "
         "images, convert_pt2e, then XNNPACK-lowered .pte per batch size"),
)}


def get_peer(name: str) -> Peer:
    if name not in PEERS:
        raise ConfigError(f"unknown peer '{name}'; choose from: {', '.join(PEERS)}")
    return PEERS[name]


def choose(names=None) -> list[Peer]:
    """The peers asked for (all when `names` is empty), in registry order; ConfigError for an
    unknown name."""
    wanted = {get_peer(n).name for n in names or ()}
    return [p for p in PEERS.values() if not wanted or p.name in wanted]


def missing(peer: Peer) -> str | None:
    """None when the peer's modules are importable here, else the one line that says how."""
    lacking = [m for m in peer.modules if importlib.util.find_spec(m) is None]
    if not lacking:
        return None
    return f"not installed ({', '.join(lacking)}): pip install 'mnistopt[{peer.extra}]'"


def tool_versions(peer: Peer) -> str:
    """'openvino 2026.4.1, nncf 3.4.0': the versions that build and run this peer."""
    out = []
    for dist in peer.tools:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)
