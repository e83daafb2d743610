"""Structured pruning (`mnistopt prune`): widths, exact channel surgery, the run it writes, and
how the bench counts a pruned model (against its base arch's accuracy and peers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnistopt import archs as A
from mnistopt.archs import get_arch
from mnistopt.errors import ConfigError
from mnistopt.train import TrainConfig, load_run, train
from mnistopt.train.prune import (framework_state, keep_for_budget, kept_width, layer_arrays, narrow,
                                  narrow_to, prunable, prune_arrays, widths)

# Every kind of layer pruning must cut through: BN after conv, a depthwise conv that follows
# its input's channels, a flatten of a spatial map (channel-major features), hidden dense
# layers, and a global average pool in the second arch. (The depthwise conv has no bias: a
# bias would light up a silenced channel again, as it does in real pruning.)
FLAT = A.Arch("flat", (A.Normalize(), A.Conv(16, 3, bias=False), A.BatchNorm(), A.ReLU(),
                       A.DepthwiseConv(3, pad=1, multiplier=2, bias=False), A.ReLU(), A.MaxPool(2),
                       A.Conv(24, 3), A.ReLU(), A.MaxPool(2), A.Flatten(), A.Dense(32),
                       A.ReLU(), A.Dense(10)), "test")
GAP = A.Arch("gap", get_arch("edge").layers, "test")


@pytest.mark.parametrize("out,keep,want", [
    (64, 0.5, 32), (32, 0.75, 24), (16, 0.5, 8), (16, 0.3, 8), (8, 0.5, 4), (8, 0.75, 8),
    (6, 0.5, 3), (128, 0.1, 16), (12, 1.0, 12), (4, 0.1, 1), (10, 0.05 + 1e-9, 4)])
def test_kept_width_rounds_up_to_the_simd_group(out, keep, want):
    assert kept_width(out, keep) == want


def test_narrow_cuts_every_conv_and_hidden_dense_but_never_the_classes():
    seed = get_arch("seed")
    small = narrow(seed, 0.5)
    assert small.name == "seed_k50" and prunable(seed) == [1, 3, 7]
    assert [getattr(la, "out", None) for la in small.layers] == \
        [None, 16, None, 32, None, None, None, 64, None, 10]
    assert small.macs < seed.macs / 3.5  # two neighbouring convs at half width: a quarter
    for bad in (0, 0.05, 1.5, float("nan"), True, "half"):
        with pytest.raises(ConfigError, match="--keep is a fraction"):
            narrow(seed, bad)


FRAMEWORKS = ["torch", "keras", "tf"]


def test_every_framework_can_be_pruned():
    from mnistopt.train import FRAMEWORKS as TRAINED
    from mnistopt.train import prune

    assert set(prune.FRAMEWORKS) == set(TRAINED) == set(FRAMEWORKS)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("arch", [FLAT, GAP], ids=["flatten-dwconv", "gap-bn-padded"])
def test_each_framework_names_every_array_of_every_layer(fw, arch):
    """`layer_names` (each backend's, beside its builder) names each learned array of the built
    model once, in the layer that holds it: a global average pool's two torch modules and a
    padded conv's two Keras layers must not shift the names of the layers after them."""
    pytest.importorskip("tensorflow" if fw != "torch" else "torch")
    from mnistopt.train import backend

    mod = backend(fw)
    if fw == "torch":
        import torch

        state = torch.random.get_rng_state()
        names = mod.layer_names(arch)
        assert torch.equal(state, torch.random.get_rng_state())  # shapes only, no draws
    else:
        names = mod.layer_names(arch)
    weights = mod.weights(mod.build(arch))
    flat = [n for per in names for n in per.values()]
    assert len(flat) == len(set(flat)) and set(flat) <= set(weights)
    assert set(weights) - set(flat) <= {k for k in weights if k.endswith("num_batches_tracked")}
    for la, per, (c_out, _, _) in zip(arch.layers, names, arch.shapes()):
        assert tuple(per) == A.arrays(la)
        if "w" in per:  # the output channels sit on the last axis in NHWC frameworks, the first in torch
            w = weights[per["w"]]
            assert (w.shape[0] if fw == "torch" else w.shape[-1] * (w.shape[-2] if isinstance(
                la, A.DepthwiseConv) else 1)) == c_out
        for k in set(per) & {"b", "gamma", "beta", "mean", "var"}:
            assert weights[per[k]].shape == (c_out,)


def _model(fw, arch):
    """A fresh model of `arch` in `fw`, its arrays per layer (torch layout), batch-norm
    statistics moved away from their 0/1 start so that the surgery on them shows."""
    from mnistopt.train import backend

    mod = backend(fw)
    model = mod.build(arch, seed=1)
    layers = layer_arrays(fw, arch, mod.weights(model))
    rng = np.random.default_rng(2)
    for la, arrs in zip(arch.layers, layers):
        if isinstance(la, A.BatchNorm):
            n = len(arrs["mean"])
            arrs.update(mean=rng.uniform(-0.5, 0.5, n), var=rng.uniform(0.5, 2, n),
                        gamma=rng.uniform(0.5, 1.5, n), beta=rng.uniform(-0.1, 0.1, n))
            for k in arrs:
                arrs[k] = arrs[k].astype(np.float32)
    return mod, model, layers


def _set(mod, fw, arch, model, layers):
    mod.set_weights(model, framework_state(fw, arch, layers, mod.weights(model)))


def _logits(mod, model, x):
    return mod.logits(model, x if mod.LAYOUT == "NCHW" else x.transpose(0, 2, 3, 1).copy())


def _silence_weakest(arch, small, layers):
    """Zero the channels pruning will drop, so the pruned model must compute *exactly* the same
    logits: a dropped channel then contributes nothing (its filter and bias are zero, or the
    batch norm after it outputs 0 before a ReLU)."""
    layers = [{k: v.copy() for k, v in la.items()} for la in layers]
    for i in prunable(arch):
        la, sm = arch.layers[i], small.layers[i]
        drop = np.arange(sm.out, la.out)  # the last channels: made the weakest
        layers[i]["w"][drop] = 0
        if "b" in layers[i]:
            layers[i]["b"][drop] = 0
        if i + 1 < len(arch.layers) and isinstance(arch.layers[i + 1], A.BatchNorm):
            layers[i + 1]["gamma"][drop] = 0
            layers[i + 1]["beta"][drop] = 0
    return layers


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("arch", [FLAT, GAP], ids=["flatten-dwconv", "gap-bn"])
@pytest.mark.parametrize("keep", [0.5, 0.75])
def test_surgery_is_exact_when_the_dropped_channels_were_silent(fw, arch, keep):
    pytest.importorskip("tensorflow" if fw != "torch" else "torch")
    mod, model, layers = _model(fw, arch)
    small = narrow(arch, keep)
    layers = _silence_weakest(arch, small, layers)
    _set(mod, fw, arch, model, layers)
    pruned = mod.build(small)
    _set(mod, fw, small, pruned, prune_arrays(arch, small, layers, mod.LAYOUT))
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(_logits(mod, pruned, x), _logits(mod, model, x), rtol=0, atol=2e-5)
    assert sum(v.size for k, v in mod.weights(pruned).items()) < \
        sum(v.size for v in mod.weights(model).values())


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_keeping_everything_is_the_same_model(fw):
    pytest.importorskip("tensorflow" if fw != "torch" else "torch")
    mod, model, layers = _model(fw, FLAT)
    _set(mod, fw, FLAT, model, layers)
    small = narrow(FLAT, 1.0)
    pruned = mod.build(small)
    _set(mod, fw, small, pruned, prune_arrays(FLAT, small, layers, mod.LAYOUT))
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(_logits(mod, pruned, x), _logits(mod, model, x))


def _parent(fw, tiny_mnist, tmp_path):
    pytest.importorskip("tensorflow" if fw != "torch" else "torch")
    cfg = TrainConfig(framework=fw, arch="edge", epochs=2, batch_size=64, lr=3e-3,
                      limit=384, val_split=128)
    return train(cfg, tmp_path / "runs" / f"{fw}-edge", data=tiny_mnist, progress=False)


@pytest.fixture
def parent(tiny_mnist, tmp_path):
    return _parent("torch", tiny_mnist, tmp_path)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_prune_run_writes_the_smallest_candidate_that_holds_validation(fw, tiny_mnist, tmp_path):
    from mnistopt.train.prune import prune_run

    parent = _parent(fw, tiny_mnist, tmp_path)
    run, tried = prune_run(parent.path, [0.75, 0.5], max_drop=1.0, data=tiny_mnist,
                           progress=False)  # max_drop 100 pp: both hold, the smaller wins
    assert run.path == parent.path.parent / f"{fw}-edge_k50" and run.arch == "edge_k50"
    assert [t["keep"] for t in tried] == [0.75, 0.5] and [t["chosen"] for t in tried] == [False, True]
    m = json.loads((run.path / "metrics.json").read_text())
    src = m["pruned_from"]
    assert src["arch"] == "edge" and src["keep"] == 0.5 and src["parent_macs"] == get_arch("edge").macs
    assert src["parent_config"]["arch"] == "edge" and src["parent_config"]["limit"] == 384
    assert m["macs"] == narrow(get_arch("edge"), 0.5).macs and m["config"]["arch"] == "edge_k50"
    assert m["config"]["limit"] == 384  # the parent's recipe, fine-tuned for one epoch
    assert m["epochs"] == 2 and isinstance(m["test_accuracy"], float)  # as long as the parent
    reloaded = load_run(run.path)  # from its recorded spec and weights.npz
    np.testing.assert_allclose(reloaded.logits(tiny_mnist.x_test[:16]),
                               run.logits(tiny_mnist.x_test[:16]), atol=1e-5)
    # Pruning a pruned run keeps the original base arch.
    again, _ = prune_run(run.path, [0.5], epochs=1, max_drop=1.0, data=tiny_mnist, progress=False)
    assert again.arch == "edge_k50_k50" and again.metrics["pruned_from"]["arch"] == "edge"
    assert again.metrics["epochs"] == 1


def test_prune_run_writes_nothing_when_no_candidate_holds(parent, tiny_mnist, monkeypatch):
    from mnistopt.train import prune as P

    before = sorted(p.name for p in parent.path.parent.iterdir())
    monkeypatch.setitem(parent.metrics, "val_accuracy", 1.01)  # unreachable
    monkeypatch.setattr("mnistopt.train.load_run", lambda d: parent)
    with pytest.raises(ConfigError, match=r"no pruned model held validation accuracy.*keep 0.5"):
        P.prune_run(parent.path, [0.5], data=tiny_mnist, progress=False)
    assert sorted(p.name for p in parent.path.parent.iterdir()) == before


def test_keep_for_budget_takes_the_largest_fraction_that_fits():
    edge, wide = get_arch("edge"), get_arch("wide")
    assert keep_for_budget(wide, max_macs=edge.macs) == 0.5  # half of wide is edge, exactly
    k = keep_for_budget(wide, max_macs=edge.macs + 1, max_params=edge.params)
    assert narrow(wide, k).layers == narrow(wide, 0.5).layers
    k = keep_for_budget(edge, max_params=edge.params - 1)
    assert narrow(edge, k).params < edge.params  # it fits, and no larger fraction does
    assert all(narrow(edge, j / 64).params >= edge.params for j in range(round(k * 64) + 1, 64))
    with pytest.raises(ConfigError, match="fits the budget as it is"):
        keep_for_budget(edge, max_macs=edge.macs)
    with pytest.raises(ConfigError, match=r"no pruned edge fits params 100: the narrowest has"):
        keep_for_budget(edge, max_params=100)
    for bad in (0, -5, 1.5, True, "1M"):
        with pytest.raises(ConfigError, match="--max-macs is a positive whole number"):
            keep_for_budget(edge, max_macs=bad)
    with pytest.raises(ConfigError, match="give --max-macs or --max-params"):
        keep_for_budget(edge)


def test_narrow_to_cuts_each_layer_to_its_own_width():
    """Per-layer widths cut where the work is: edge's second conv alone holds half its
    multiply-adds, so halving it (and the third conv's inputs with it) is 0.67x the work."""
    edge = get_arch("edge")
    assert widths(edge) == [8, 16, 16, 32, 32]
    small = narrow_to(edge, [8, 8, 16, 32, 32])
    assert small.name == "edge_w8_8_16_32_32" and widths(small) == [8, 8, 16, 32, 32]
    assert [la for la in small.layers if not isinstance(la, A.Conv)] == \
        [la for la in edge.layers if not isinstance(la, A.Conv)]
    assert small.macs == edge.macs - 576 * 8 * 72 - 100 * 8 * 144  # conv2's outputs, conv3's inputs
    assert narrow_to(edge, [8, 8, 16, 32, 32]).layers == small.layers
    long = narrow_to(get_arch("wide"), [9, 17, 31, 63, 63])  # "wide_w9_17_31_63_63" fits 40
    assert long.name == "wide_w9_17_31_63_63"
    seed = A.Arch("a_rather_long_arch_name_of_thirty", get_arch("seed").layers, "test")
    named = narrow_to(seed, [31, 63, 127])
    assert len(named.name) <= 40 and named.name.startswith("a_rather_long_arch_name_of_w")
    assert named.name != narrow_to(seed, [31, 63, 126]).name
    for bad in ([8, 8, 16, 32], [8, 8, 16, 32, 32, 10], [8, 17, 16, 32, 32], [0, 8, 16, 32, 32],
                [8, True, 16, 32, 32], [8, 8.0, 16, 32, 32]):
        with pytest.raises(ConfigError, match=r"edge has 5 prunable layers \(8,16,16,32,32 wide\)"):
            narrow_to(edge, bad)
    with pytest.raises(ConfigError, match="are edge's own widths: nothing to prune"):
        narrow_to(edge, [8, 16, 16, 32, 32])


def test_prune_run_with_widths_and_a_fraction(parent, tiny_mnist):
    """--widths candidates sit beside --keep ones: the smallest that holds is written, and
    the run records how it was cut."""
    from mnistopt.train.prune import cut_label, prune_run

    run, tried = prune_run(parent.path, [0.75], widths_to=[[8, 8, 16, 32, 32]],
                           epochs=1, max_drop=1.0, data=tiny_mnist, progress=False)
    assert [cut_label(t) for t in tried] == ["keep 0.75", "widths 8,8,16,32,32"]
    assert [t["widths"] for t in tried] == [[8, 16, 16, 24, 24], [8, 8, 16, 32, 32]]
    assert run.arch == "edge_w8_8_16_32_32" and run.path.name == "torch-edge_w8_8_16_32_32"
    src = run.metrics["pruned_from"]
    assert src["keep"] is None and src["widths"] == [8, 8, 16, 32, 32] and src["arch"] == "edge"
    assert load_run(run.path).arch_spec == narrow_to(get_arch("edge"), [8, 8, 16, 32, 32])


def test_prune_run_to_a_budget(parent, tiny_mnist):
    from mnistopt.train.prune import prune_run

    budget = narrow(get_arch("edge"), 0.5).params
    run, tried = prune_run(parent.path, [], max_params=budget, epochs=1, max_drop=1.0,
                           data=tiny_mnist, progress=False)
    assert run.metrics["params"] <= budget and [t["chosen"] for t in tried] == [True]
    assert run.metrics["pruned_from"]["keep"] == keep_for_budget(get_arch("edge"), max_params=budget)


@pytest.mark.parametrize("args,message", [
    (["--keep", "2"], "--keep is a fraction"),
    (["--max-drop", "-1"], "--max-drop is in percentage points"),
    (["--out", "/proc/x"], "--out"),
    (["--keep", "0.75", "--max-params", "5000"], "--keep 0.75 does not fit the budget"),
    (["--max-macs", "0"], "--max-macs is a positive whole number"),
    (["--max-params", "100"], "no pruned edge fits params 100"),
    (["--max-macs", "999999999"], "fits the budget as it is"),
    (["--widths", "8,8,16"], "edge has 5 prunable layers (8,16,16,32,32 wide)"),
    (["--widths", "8,x,16,32,32"], "--widths takes whole numbers separated by commas"),
    (["--widths", "8,16,16,32,32"], "nothing to prune"),
    (["--widths", "8,8,16,32,32", "--max-macs", "900000"], "--widths 8,8,16,32,32 does not fit the budget"),
])
def test_cli_bad_arguments_exit_2_before_any_work(parent, args, message, capsys):
    from mnistopt.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prune", str(parent.path), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_cli_refuses_a_run_it_cannot_prune(tmp_path, capsys):
    from mnistopt.cli import main

    run = tmp_path / "onnx-edge"  # a framework mnistopt does not train
    run.mkdir()
    (run / "model.onnx").write_bytes(b"x")
    (run / "metrics.json").write_text(json.dumps(
        {"framework": "onnx", "arch": "edge", "native": "model.onnx", "layout": "NCHW"}))
    with pytest.raises(SystemExit) as e:
        main(["prune", str(run)])
    assert e.value.code == 2 and "pruning works on torch, keras, tf runs" in capsys.readouterr().err


def test_bench_counts_a_pruned_model_for_its_base_arch():
    from mnistopt.bench import goals

    def rec(id, arch, b1, b256, acc, base=None, peer=None, kind="artifact"):
        r = {"id": id, "arch": arch, "quant": "int8", "backend": "litert", "framework": "torch",
             "format": "tflite", "kind": kind, "accuracy": acc, "latency_source": "native",
             "latency": {"1": {"p50_us": b1}, "256": {"images_per_s": b256}}, "threads": 1}
        return {**r, **({"base_arch": base} if base else {}), **({"peer": peer} if peer else {})}

    recs = [rec("torch-seed:native", "seed", 900, 1000, 0.9866, kind="native"),
            rec("seed-torch-int8.tflite", "seed", 240, 4000, 0.9861),
            rec("peer", "seed", 244, 7900, 0.9864, peer={"name": "p"}),
            rec("seed_k50-torch-int8.tflite", "seed_k50", 80, 14000, 0.9870, base="seed"),
            rec("seed_k25-torch-int8.tflite", "seed_k25", 30, 40000, 0.9825, base="seed")]
    m, p = goals.best_vs_peer(recs, "seed", 256)
    # k25 is fastest but 0.41 pp below seed's native model: it does not count.
    assert (m["id"], p["id"]) == ("seed_k50-torch-int8.tflite", "peer")
    line = next(t for t in goals.check_targets(recs, {"cpu": {"avx2": True}})
                if t["name"] == "mnistopt vs best peer (seed)")
    assert line["ok"] is True and line["value"] == pytest.approx(14000 / 7900)
    rec_seed = next(e for e in goals.recommend(recs) if e["arch"] == "seed")
    assert rec_seed["b1"]["id"] == "seed_k50-torch-int8.tflite"
    assert all(e["arch"] != "seed_k50" for e in goals.recommend(recs))


def test_a_pruned_runs_files_and_rows_name_their_base_arch(parent, tiny_mnist):
    from mnistopt.artifact import read_sidecar
    from mnistopt.errors import RunError
    from mnistopt.export import export
    from mnistopt.targets.items import artifact_item, native_item, peer_items
    from mnistopt.train.prune import prune_run

    run, _ = prune_run(parent.path, [0.5], max_drop=1.0, data=tiny_mnist, progress=False)
    small = narrow(get_arch("edge"), 0.5)
    [art] = export(run, "onnx", data=tiny_mnist, progress=False)
    meta = read_sidecar(art.path)
    assert (meta["arch"], meta["base_arch"]) == ("edge_k50", "edge")
    assert (meta["params"], meta["macs"]) == (small.params, small.macs)
    item = artifact_item(art.path)
    assert (item.arch, item.base_arch, item.macs) == ("edge_k50", "edge", small.macs)
    native = native_item(run.path)
    assert (native.base_arch, native.params, native.macs) == ("edge", small.params, small.macs)
    assert native_item(parent.path).base_arch is None
    # Peers are built from the model a user brings, never from mnistopt's pruned one.
    with pytest.raises(RunError, match="no torch run"):
        peer_items([native], None, [1], "cpu", progress=False)


@pytest.mark.parametrize("change,message", [
    ({"config": {"betas": 5}}, "its config is not one mnistopt wrote"),
    ({"config": {"no_such_option": 1}}, "its config is not one mnistopt wrote"),
    ({"config": {"epochs": "many"}}, "--epochs is a whole number"),
    ({"val_accuracy": True}, "has no validation accuracy"),
    ({"val_accuracy": None}, "has no validation accuracy"),
])
def test_a_hostile_metrics_file_is_one_clear_error(parent, tiny_mnist, change, message):
    from mnistopt.train.prune import prune_run

    path = parent.path / "metrics.json"
    m = json.loads(path.read_text())
    m.update({k: {**m[k], **v} if isinstance(v, dict) else v for k, v in change.items()})
    path.write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=message):
        prune_run(parent.path, [0.5], data=tiny_mnist, progress=False)
    assert sorted(p.name for p in parent.path.parent.iterdir()) == ["torch-edge"]
