"""Architectures: the layer vocabulary in every framework, and JSON specs as untrusted input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mnistopt import archs as A
from mnistopt import archspec as S
from mnistopt.errors import ConfigError, RunError
from mnistopt.train import FRAMEWORKS, TrainConfig, backend, load_run, train

# Every layer type and option at least once: stride, padding, bias on/off, BN, both pools,
# a depthwise multiplier, flatten and dropout before a dense head.
ZOO = A.Arch("zoo", (
    A.Normalize(), A.Conv(8, 3, pad=1, stride=2, bias=False), A.BatchNorm(), A.ReLU(),  # 8x14x14
    A.DepthwiseConv(3, pad=1, multiplier=2), A.ReLU(), A.Conv(12, 1),                   # 12x14x14
    A.AvgPool(2), A.DepthwiseConv(3, stride=2, bias=False), A.MaxPool(2),               # 12x1x1
    A.Flatten(), A.Dropout(0.1), A.Dense(16), A.ReLU(), A.Dense(10)), "every layer type")
SEPARABLE = A.Arch("sep", (
    A.Normalize(), A.Conv(8, 3, pad=1, bias=False), A.BatchNorm(), A.ReLU(), A.MaxPool(2),
    *A.separable(16, 3, pad=1), A.MaxPool(2), *A.separable(24, 3, stride=2),
    A.GlobalAvgPool(), A.Dense(10)), "depthwise-separable, global average pooling")
FWS = sorted(FRAMEWORKS)


def count_params(framework, model) -> int:
    if framework == "torch":
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    if framework == "keras":
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("arch", [ZOO, SEPARABLE], ids=lambda a: a.name)
@pytest.mark.parametrize("framework", FWS)
def test_new_layers_build_to_declared_size(framework, arch):
    mod = backend(framework)
    model = mod.build(arch, seed=0)
    assert count_params(framework, model) == arch.params
    shape = (2, 1, 28, 28) if mod.LAYOUT == "NCHW" else (2, 28, 28, 1)
    out = mod.logits(model, np.random.default_rng(0).random(shape, dtype=np.float32))
    assert out.shape == (2, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("arch", [ZOO, SEPARABLE, *A.ARCHS.values()], ids=lambda a: a.name)
def test_shapes_and_macs_match_torch(arch):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = backend("torch").build(arch).eval()
    x, seen = torch.zeros(1, 1, 28, 28), []
    for layer in model:  # torch's GlobalAvgPool is two modules (pool, flatten): compare after
        x = layer(x)
        seen.append(tuple(x.shape[1:]) + (1,) * (4 - x.dim()))
    expected = arch.shapes()
    assert seen[-1] == expected[-1] and set(expected) <= set(seen)
    with FlopCounterMode(display=False) as fc:  # counts conv and matmul FLOPs: 2 per MAC
        model(torch.zeros(1, 1, 28, 28))
    assert fc.get_total_flops() == 2 * arch.macs


def test_keras_shapes_match_spec():
    model = backend("keras").build(ZOO)
    shapes = {tuple(layer.output.shape[1:]) for layer in model.layers}
    for c, h, w in ZOO.shapes():
        assert (h, w, c) in shapes or (c,) in shapes


def test_separable_is_cheaper_than_full_conv():
    full = A.Arch("full", (A.Conv(32, 1), A.Conv(64, 3), A.GlobalAvgPool(), A.Dense(10)), "")
    sep = A.Arch("sep", (A.Conv(32, 1), A.DepthwiseConv(3), A.Conv(64, 1), A.GlobalAvgPool(), A.Dense(10)), "")
    assert sep.macs * 6 < full.macs and sep.params * 6 < full.params


@pytest.mark.parametrize("arch", [ZOO, SEPARABLE, *A.ARCHS.values()], ids=lambda a: a.name)
def test_json_round_trip(arch, tmp_path):
    path = S.write(arch, tmp_path / f"{arch.name}.json")
    assert A.get_arch(str(path)) == arch
    assert S.from_dict(json.loads(S.dumps(arch)), "x") == arch


def test_defaults_and_name_from_file(tmp_path):
    f = tmp_path / "my-net.json"
    f.write_text(json.dumps({"layers": [{"type": "conv", "out": 4}, {"type": "relu"},
                                        {"type": "gap"}, {"type": "dense", "out": 10}]}))
    a = A.get_arch(str(f))
    assert a.name == "my_net" and a.layers[0] == A.Conv(4, 3) and a.params == 4 * 9 + 4 + 50


GOOD = [{"type": "normalize"}, {"type": "conv", "out": 4, "k": 3}, {"type": "relu"},  # 4x26x26
        {"type": "maxpool", "k": 2}, {"type": "conv", "out": 8, "k": 3}, {"type": "relu"},  # 8x11x11
        {"type": "flatten"}, {"type": "dense", "out": 10}]


def with_layer(i, **changes):
    layers = [dict(x) for x in GOOD]
    layers[i].update(changes)
    return {"name": "t", "layers": [{k: v for k, v in x.items() if v is not None} for x in layers]}


HOSTILE = [
    (with_layer(1, type="conv3d"), "layers[1]: unknown layer type \"conv3d\""),
    (with_layer(1, kernel=3), "layers[1] (conv): unknown field \"kernel\""),
    (with_layer(1, out=None), "layers[1] (conv): missing field 'out'"),
    (with_layer(1, k="3"), "'k' must be an integer in 1..15, got \"3\""),
    (with_layer(1, k=3.0), "'k' must be an integer"),
    (with_layer(1, out=True), "'out' must be an integer"),
    (with_layer(1, out=0), "'out' must be an integer in 1..1024, got 0"),
    (with_layer(1, out=10 ** 9), "'out' must be an integer in 1..1024"),
    (with_layer(1, bias="no"), "'bias' must be true or false"),
    (with_layer(0, std=float("nan")), "'std' must be a number"),
    (with_layer(4, k=15), "layers[4] (conv): a 15x15 kernel is bigger than its 13x13 input"),
    ({"name": "t", "layers": [{"type": "conv", "out": 4, "stride": 4}, {"type": "maxpool", "k": 8},
                              {"type": "flatten"}, {"type": "dense", "out": 10}]},
     "layers[1] (maxpool): pooling a 7x7 map by 8 leaves nothing"),
    (with_layer(1, pad=3), "pad 3 must be smaller than k 3"),
    (with_layer(1, pad=8), "'pad' must be an integer in 0..7"),
    (with_layer(6, type="relu"), "layers[7] (dense): needs a flat input"),
    (with_layer(7, out=7), "must end in 10 class scores"),
    (with_layer(2, type="normalize"), "normalize can only be the first layer"),
    ({"name": "t", "layers": GOOD + [{"type": "conv", "out": 4}]},
     "needs a feature map, but the input is already flat"),
    ({"name": "t", "layers": [{"type": "relu"}] * 60 + GOOD}, "more than the limit of 64"),
    ({"name": "t", "layers": [{"type": "conv", "out": 1024}, {"type": "conv", "out": 1024},
                              {"type": "gap"}, {"type": "dense", "out": 10}]},
     "multiply-adds, over the limit"),
    ({"name": "t", "layers": [{"type": "flatten"}, {"type": "dense", "out": 1024}, {"type": "dense", "out": 1024},
                              *[{"type": "dense", "out": 1024}] * 20, {"type": "dense", "out": 10}]},
     "parameters, over the limit"),
    ({"name": "../../etc", "layers": GOOD}, "name: must be a letter then"),
    ({"name": "edge", "layers": GOOD}, "'edge' is a registered architecture with other layers"),
    ({"name": "t", "layers": GOOD, "extra": 1}, "unknown field \"extra\""),
    ({"name": "t", "layers": []}, "layers: must be a non-empty list"),
    ({"name": "t", "layers": GOOD, "schema": "other/9"}, "is not mnistopt.arch/1"),
    ([1, 2], "an architecture is a JSON object, got list"),
    ({"name": "t", "layers": [[]]}, "a layer is an object"),
]


@pytest.mark.parametrize("spec,message", HOSTILE, ids=[m[:30] for _, m in HOSTILE])
def test_hostile_specs_are_one_clear_line(spec, message, tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(spec))
    with pytest.raises(ConfigError) as err:
        A.get_arch(str(f))
    text = str(err.value)
    assert message in text and text.startswith(str(f)) and "\n" not in text, text


@pytest.mark.parametrize("content,message", [
    (b"{" * 100_000, "over 64 KB"),
    (b"[" * 60_000, "nested too deeply"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"{\"name\": ", "not valid JSON"),
])
def test_hostile_files(content, message, tmp_path):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        A.get_arch(str(f))


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="no such architecture file"):
        A.get_arch(str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match="unknown architecture 'nope'.*or give a .json file"):
        A.get_arch("nope")


def test_registered_archs_pass_the_checks():
    for arch in A.ARCHS.values():
        S.check(arch, arch.name)


def test_run_records_the_spec_and_rebuilds_from_it_alone(tiny_mnist, tmp_path):
    f = S.write(SEPARABLE, tmp_path / "sep.json")
    run = train(TrainConfig(framework="torch", arch=str(f), epochs=1, limit=128, val_split=0),
                tmp_path / "run", data=tiny_mnist, progress=False)
    f.unlink()  # the run alone must be enough
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["arch"] == "sep" and m["arch_spec"] == S.to_dict(SEPARABLE)
    again = load_run(tmp_path / "run")
    assert again.arch_spec == SEPARABLE
    np.testing.assert_allclose(again.logits(tiny_mnist.x_test[:16]), run.logits(tiny_mnist.x_test[:16]), atol=1e-5)
    # A tampered spec is refused when the run is loaded, before any framework sees it.
    m["arch_spec"]["layers"][1]["k"] = 99
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=r"arch_spec: layers\[1\] \(conv\): 'k' must be"):
        load_run(tmp_path / "run")
    # An old run without a spec may only name a registered arch, never a file.
    del m["arch_spec"]
    m["arch"] = str(f)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="without its spec"):
        load_run(tmp_path / "run")


def test_default_run_dir_uses_the_arch_name(tmp_path, monkeypatch):
    from mnistopt.train import default_run_dir

    f = S.write(SEPARABLE, tmp_path / "x" / "sep.json")
    assert default_run_dir(TrainConfig(arch=str(f)), tmp_path).name == "torch-sep"


def test_cli_refuses_a_bad_arch_file_in_one_line(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(with_layer(4, k=15)))
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--quiet", "--arch", str(f)],
                       capture_output=True, text=True, env={**os.environ, "MNISTOPT_WORKSPACE": str(tmp_path)})
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {f}: layers[4] (conv): a 15x15 kernel"), lines


def test_cli_writes_a_registered_arch_as_json(tmp_path):
    f = tmp_path / "edge.json"
    r = subprocess.run([sys.executable, "-m", "mnistopt", "arch", "edge", "--out", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert A.get_arch(str(f)) == A.ARCHS["edge"]
    r = subprocess.run([sys.executable, "-m", "mnistopt", "arch", str(f)], capture_output=True, text=True)
    assert f"{A.ARCHS['edge'].params:,} parameters" in r.stdout and "-> 32x4x4" in r.stdout
