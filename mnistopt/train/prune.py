"""Structured pruning: a trained model made narrower, whole channels at a time, then fine-tuned.

Quantization makes each multiply-add cheaper; pruning removes multiply-adds. A convolution's
cost is (its output channels) x (its input channels) x k x k per pixel, so keeping half the
channels of two neighbouring convs leaves a quarter of the work between them. Whole channels
go (not single weights), so the result is an ordinary, smaller dense model that every runtime
and exporter already runs at full speed, with no sparse kernels.

Which channels go: the weakest by the L1 norm of their filter (Li et al. 2017, "Pruning
Filters for Efficient ConvNets"), scaled by the batch norm that follows, if one does
(|gamma| / sqrt(var + eps): a filter whose output BN shrinks to nothing contributes nothing,
whatever its own norm). The classifier's 10 outputs are never pruned.

How the pieces fit (each step below is a function):
1. `narrow(arch, keep)`: the same layers with `keep` of each prunable layer's width, rounded
   up to a multiple of 8 (4 for layers under 16 wide) because SIMD kernels process channels
   in groups of 4 or 8 and a ragged remainder costs nearly a whole group; or `narrow_to(arch,
   widths)`: each prunable layer cut to a width of its own. A uniform cut takes as much from
   the layers where a network's accuracy lives as from those where its time goes: `edge`
   spends half its multiply-adds in its second conv (8 -> 16 channels at 24x24), and halving
   that layer alone (8,8,16,32,32: 0.68x the work) held validation accuracy where halving
   every layer lost 0.26 pp;
2. `prune_arrays(arch, small, layers)`: pick the channels, slice every array that sees them
   (the layer's own outputs, the next layer's inputs, batch-norm statistics, a flatten's
   channel-major features);
3. `train.fit(..., arch=small, init=arrays)`: fine-tune on the training split; the
   validation split picks among several `keep` values; the test set is scored once, after.

Arrays are handled in torch's layout (conv OIHW, dense (out, in)); each framework's arrays map
onto it one arch layer at a time (`layer_arrays`, `framework_state`), and a flatten keeps its
framework's feature order (NCHW channel-major, NHWC channel-minor).
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import replace

import numpy as np

from .. import archs as A
from ..errors import ConfigError
from . import backend

KEEP_RANGE = (0.05, 1.0)  # a keep fraction in (0.05, 1.0]


def kept_width(out: int, keep: float) -> int:
    """Channels (or units) a layer of `out` keeps: `keep` of them, rounded up to the SIMD group
    (8, or 4 under 16 wide, or 1 under 8), never more than `out`, at least one group."""
    group = 8 if out >= 16 else 4 if out >= 8 else 1
    return min(out, max(group, math.ceil(out * keep / group) * group))


def prunable(arch: A.Arch) -> list[int]:
    """Indices of the layers whose width is cut: every conv and dense layer but the last dense
    (the 10 classes). A depthwise conv follows its input's channels and is not counted."""
    dense = [i for i, la in enumerate(arch.layers) if isinstance(la, A.Dense)]
    last = dense[-1] if dense else None
    return [i for i, la in enumerate(arch.layers)
            if isinstance(la, (A.Conv, A.Dense)) and i != last]


def narrow(arch: A.Arch, keep: float, name: str | None = None) -> A.Arch:
    """`arch` with each prunable layer cut to `kept_width(out, keep)`."""
    lo, hi = KEEP_RANGE
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not lo < keep <= hi:
        raise ConfigError(f"--keep is a fraction in ({lo}, {hi}], got {keep!r}")
    cut = set(prunable(arch))
    layers = tuple(replace(la, out=kept_width(la.out, keep)) if i in cut else la
                   for i, la in enumerate(arch.layers))
    name = name or f"{arch.name}_k{round(keep * 100)}"[:40]
    summary = (f"{arch.name} pruned to {keep:.0%} of each layer's channels (L1 filter norms), "
               "fine-tuned")
    return A.Arch(name, layers, summary)


def widths(arch: A.Arch) -> list[int]:
    """The prunable layers' widths, in order (what `narrow_to` takes)."""
    return [arch.layers[i].out for i in prunable(arch)]


def narrow_to(arch: A.Arch, new: list[int], name: str | None = None) -> A.Arch:
    """`arch` with its prunable layers cut to `new` widths, one per layer in order, each from
    1 to the layer's own."""
    have = widths(arch)
    shown = ",".join(map(str, new))
    if len(new) != len(have) or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= h for w, h in zip(new, have)):
        raise ConfigError(f"--widths {shown}: {arch.name} has {len(have)} prunable layers "
                          f"({','.join(map(str, have))} wide); give one width each, from 1 to "
                          "the layer's own")
    if list(new) == have:
        raise ConfigError(f"--widths {shown} are {arch.name}'s own widths: nothing to prune")
    cut = dict(zip(prunable(arch), new))
    layers = tuple(replace(la, out=cut[i]) if i in cut else la for i, la in enumerate(arch.layers))
    name = name or f"{arch.name}_w{'_'.join(map(str, new))}"
    if len(name) > 40:  # a file-name part (archspec.NAME_RE): a digest keeps it unique
        name = f"{arch.name[:26]}_w{hashlib.sha256(shown.encode()).hexdigest()[:10]}"
    return A.Arch(name, layers, f"{arch.name} pruned to widths {shown} (L1 filter norms), fine-tuned")


def _importance(w: np.ndarray, bn: dict | None) -> np.ndarray:
    """Per output channel: the L1 norm of its filter, times the scale of the BN after it."""
    score = np.abs(w.reshape(w.shape[0], -1)).sum(1)
    if bn is not None:
        score = score * np.abs(bn["gamma"]) / np.sqrt(bn["var"] + bn["eps"])
    return score


def prune_arrays(arch: A.Arch, small: A.Arch, layers: list[dict], layout: str = "NCHW"
                 ) -> list[dict]:
    """The arrays of `small` cut out of `arch`'s, layer by layer (each a dict in torch layout:
    conv / dense "w" and "b", batch norm "gamma", "beta", "mean", "var"). `layout`: the
    framework's, which orders a flattened map's features (NCHW channel-major, NHWC
    channel-minor)."""
    if len(arch.layers) != len(small.layers) or len(layers) != len(arch.layers):
        raise ValueError("arch, pruned arch and arrays must have one entry per layer")
    shapes = [(1, 28, 28), *arch.shapes()]  # shapes[i]: what layer i receives
    keep_in = np.arange(1)  # the channels (or features) still present
    out = []
    for i, (la, sm, arrs) in enumerate(zip(arch.layers, small.layers, layers)):
        new = {}
        if isinstance(la, (A.Conv, A.Dense)):
            w = arrs["w"][:, keep_in]
            if sm.out < la.out:
                bn = layers[i + 1] if i + 1 < len(layers) and isinstance(
                    arch.layers[i + 1], A.BatchNorm) else None
                if bn is not None:
                    bn = {**bn, "eps": arch.layers[i + 1].eps}
                # The strongest `sm.out`, kept in their original order.
                keep_out = np.sort(np.argsort(-_importance(w, bn), kind="stable")[:sm.out])
            else:
                keep_out = np.arange(la.out)
            new["w"] = w[keep_out]
            if "b" in arrs:
                new["b"] = arrs["b"][keep_out]
            keep_in = keep_out
        elif isinstance(la, A.DepthwiseConv):
            m = la.multiplier
            keep_out = (keep_in[:, None] * m + np.arange(m)).ravel()
            new = {k: v[keep_out] for k, v in arrs.items()}
            keep_in = keep_out
        elif isinstance(la, A.BatchNorm):
            new = {k: v[keep_in] for k, v in arrs.items()}
        elif isinstance(la, A.Flatten):
            c, h, w = shapes[i]
            if h * w > 1 and layout == "NCHW":  # channel c's pixels: features c*h*w + p
                keep_in = (keep_in[:, None] * (h * w) + np.arange(h * w)).ravel()
            elif h * w > 1:  # NHWC: pixel p's channels: features p*c + channel
                keep_in = (np.arange(h * w)[:, None] * c + keep_in[None, :]).ravel()
        out.append(new)
    return out


# frameworks ----------------------------------------------------------------------------------
# Each framework names and lays out a layer's arrays its own way (its backend's `layer_names`);
# `layer_arrays` brings them to the torch layout pruning works in, and `framework_state` takes
# them back.

def _to_torch(la, kind: str, v: np.ndarray, nhwc: bool) -> np.ndarray:
    if not nhwc or kind != "w":
        return v
    if isinstance(la, A.Dense):
        return v.T  # (in, out) -> (out, in)
    if isinstance(la, A.DepthwiseConv):  # (k, k, C, m) -> (C*m, 1, k, k)
        k1, k2, c, m = v.shape
        return v.transpose(2, 3, 0, 1).reshape(c * m, 1, k1, k2)
    return v.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _from_torch(la, kind: str, v: np.ndarray, nhwc: bool) -> np.ndarray:
    if not nhwc or kind != "w":
        return v
    if isinstance(la, A.Dense):
        return v.T
    if isinstance(la, A.DepthwiseConv):
        cm, _, k1, k2 = v.shape
        return v.reshape(cm // la.multiplier, la.multiplier, k1, k2).transpose(2, 3, 0, 1)
    return v.transpose(2, 3, 1, 0)


def layer_arrays(framework: str, arch: A.Arch, state: dict[str, np.ndarray]) -> list[dict]:
    """A framework's weights (its `Backend.weights`) -> one dict per arch layer, torch layout."""
    nhwc = framework != "torch"
    return [{k: _to_torch(la, k, state[n], nhwc) for k, n in names.items()}
            for la, names in zip(arch.layers, backend(framework).layer_names(arch))]


def framework_state(framework: str, arch: A.Arch, layers: list[dict],
                    template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One dict per arch layer (torch layout) -> the framework's weights for `arch` (`template`:
    a fresh model's, for the entries pruning does not touch, such as batch norm's counter)."""
    state, nhwc = dict(template), framework != "torch"
    for la, arrs, names in zip(arch.layers, layers, backend(framework).layer_names(arch)):
        for k, n in names.items():
            state[n] = np.ascontiguousarray(_from_torch(la, k, arrs[k], nhwc))
    return state


FRAMEWORKS = ("torch", "keras", "tf")


def over_budget(arch: A.Arch, max_macs: int | None, max_params: int | None) -> list[str]:
    """How `arch` exceeds the budget (empty: it fits); ConfigError for a budget that is not a
    positive whole number."""
    over = []
    for name, v, have, what in (("--max-macs", max_macs, arch.macs, "MACs"),
                                ("--max-params", max_params, arch.params, "params")):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} is a positive whole number, got {v!r}")
        if have > v:
            over.append(f"{have:,} {what} > {v:,}")
    return over


def keep_for_budget(arch: A.Arch, max_macs: int | None = None,
                    max_params: int | None = None) -> float:
    """The largest keep fraction (a multiple of 1/64) whose narrowed `arch` has at most
    `max_macs` multiply-adds and `max_params` parameters: the most capacity a budget allows.
    ConfigError when `arch` fits already or when not even the narrowest cut fits."""
    if max_macs is None and max_params is None:
        raise ConfigError("give --max-macs or --max-params (or --keep)")
    fits_now = not over_budget(arch, max_macs, max_params)  # also checks the budget's values
    want = ", ".join(f"{n} {v:,}" for n, v in (("MACs", max_macs), ("params", max_params)) if v)
    if fits_now:
        raise ConfigError(f"{arch.name} fits the budget as it is ({arch.macs:,} MACs, "
                          f"{arch.params:,} params; budget {want}): nothing to prune")
    # Widths are steps of `keep` rounded to SIMD groups of 8: a 1/64 grid tells apart every
    # width set of layers up to 512 wide. The first (largest) fraction that fits wins.
    grid = [k / 64 for k in range(63, 0, -1) if k / 64 > KEEP_RANGE[0]]
    for keep in grid:
        if not over_budget(narrow(arch, keep), max_macs, max_params):
            return keep
    least = narrow(arch, grid[-1])
    raise ConfigError(f"no pruned {arch.name} fits {want}: the narrowest has {least.macs:,} MACs "
                      f"and {least.params:,} params (channels are kept in groups of 4 and 8)")


# the whole job ---------------------------------------------------------------------------------

def cut_label(candidate: dict) -> str:
    """How a candidate (an entry of `prune_run`'s list) was cut: "keep 0.5" or "widths 8,8,16"."""
    keep = candidate.get("keep")
    return f"keep {keep:g}" if keep is not None else \
        f"widths {','.join(map(str, candidate.get('widths') or []))}"


def base_arch(metrics: dict) -> str | None:
    """The arch a pruned run was cut from (its recorded `pruned_from.arch`), else None. Read
    from an untrusted metrics.json: anything but an arch-like name is ignored."""
    from ..archspec import NAME_RE

    src = metrics.get("pruned_from")
    name = src.get("arch") if isinstance(src, dict) else None
    return name if isinstance(name, str) and NAME_RE.match(name) else None


def prune_run(run_dir, keeps: list[float], *, widths_to: list[list[int]] | None = None,
              epochs: int | None = None, lr: float | None = None,
              max_drop: float = 0.001, out=None, data=None, progress: bool = True,
              max_macs: int | None = None, max_params: int | None = None):
    """Prune the run `run_dir` to each fraction in `keeps` and each width list in `widths_to`
    (`narrow_to`), fine-tune each on the training split, and write the smallest one whose
    validation accuracy is within `max_drop` (a fraction: 0.001 = 0.1 pp) of the parent's as a
    new run directory. Returns (the run, a list of {keep (None for a width list), widths,
    arch, macs, params, val_accuracy, chosen} for every candidate).

    A budget (`max_macs`, `max_params`: a device's time or flash) adds the largest fraction
    that fits it (`keep_for_budget`) when neither `keeps` nor `widths_to` is given, and refuses
    any given candidate that does not fit, before any training.

    Fine-tuning reuses the parent's recipe (batch size, augmentation, label smoothing, ...)
    with `epochs` (default: as many as the parent trained; accuracy comes back with time:
    `wide` at half width was 0.12 pp below the run after 3 epochs, 0.02 above after 6) and `lr`
    (default: the parent's). Nothing is written when no candidate holds the accuracy: a
    ConfigError names each one's validation accuracy.
    """
    from dataclasses import asdict
    from pathlib import Path

    from . import TrainConfig, check_run_dir, fit, load_run, test_accuracy, write_run

    run = load_run(run_dir)
    if run.framework not in FRAMEWORKS:
        raise ConfigError(f"{run.path}: pruning works on {', '.join(FRAMEWORKS)} runs; this is "
                          f"a {run.framework!r} run")
    parent_val = run.metrics.get("val_accuracy")
    if isinstance(parent_val, bool) or not isinstance(parent_val, (int, float)):
        raise ConfigError(f"{run.path}: the run has no validation accuracy (trained with "
                          "--val-split 0), so there is nothing to hold a pruned model to")
    if not 0 <= max_drop <= 1:
        raise ConfigError(f"--max-drop is in percentage points, in [0, 100], got {max_drop * 100}")
    arch = run.arch_spec
    budget = max_macs is not None or max_params is not None
    widths_to = list(widths_to or [])
    if not keeps and not widths_to:
        if not budget:
            raise ConfigError("give at least one --keep fraction or --widths, or a budget "
                              "(--max-macs, --max-params)")
        keeps = [keep_for_budget(arch, max_macs, max_params)]
    smalls = {}  # two candidates that come to the same widths are one
    # A bad --keep or --widths fails here, before any work.
    for k, small in ([(k, narrow(arch, k)) for k in keeps]
                     + [(None, narrow_to(arch, w)) for w in widths_to]):
        if over := over_budget(small, max_macs, max_params):
            raise ConfigError(f"--{cut_label({'keep': k, 'widths': widths(small)})} does not fit "
                              f"the budget ({'; '.join(over)}); leave --keep and --widths out to "
                              "take the largest fraction that fits")
        smalls.setdefault(small.layers, (k, small))
    smalls = list(smalls.values())
    outs = {s.name: check_run_dir(Path(out) if out else
                                  run.path.parent / f"{run.framework}-{s.name}") for _, s in smalls}
    try:  # an untrusted metrics.json: unknown keys, wrong types (validate checks the values)
        parent_cfg = dict(run.metrics.get("config") or {})
        if parent_cfg.get("betas"):
            parent_cfg["betas"] = tuple(parent_cfg["betas"])
        # The run's arch by name (validate is told the Arch comes separately, as it does).
        base = TrainConfig(**{**parent_cfg, "arch": run.arch, "target_acc": None})
        base.validate(arch_given=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{run.path}/metrics.json: its config is not one mnistopt wrote "
                          f"({exc})") from None
    if data is None:
        from ..data import load_mnist

        data = load_mnist()
    fw, mod = run.framework, backend(run.framework)
    layers = layer_arrays(fw, arch, mod.weights(run.model))
    tried, best = [], None
    for keep, small in sorted(smalls, key=lambda p: -p[1].macs):
        cfg = replace(base, arch=small.name, epochs=epochs or base.epochs, lr=lr or base.lr)
        init = framework_state(fw, small, prune_arrays(arch, small, layers, mod.LAYOUT),
                               mod.weights(mod.build(small)))
        cand = {"keep": keep, "widths": widths(small), "arch": small.name, "macs": small.macs,
                "params": small.params}
        if progress:
            print(f"{small.name}: {cut_label(cand)}, {small.macs:,} multiply-adds "
                  f"({arch.macs / small.macs:.1f}x fewer), fine-tuning", file=sys.stderr)
        # The test set is not looked at for a candidate: only the model written is scored.
        model, result = fit(cfg, data, arch=small, init=init, progress=progress, score_test=False)
        held = result["val_accuracy"] >= parent_val - max_drop - 1e-12
        tried.append({**cand, "val_accuracy": result["val_accuracy"]})
        if held and (best is None or small.macs < best[0].macs):
            best = (small, cfg, model, result, cand)
    if best is None:
        shown = ", ".join(f"{cut_label(t)}: {t['val_accuracy']:.2%}" for t in tried)
        raise ConfigError(f"no pruned model held validation accuracy within "
                          f"{max_drop * 100:.2f} pp of {parent_val:.2%} ({shown}); try a larger "
                          "--keep, wider --widths or more --epochs")
    small, cfg, model, result, cand = best
    result["test_accuracy"] = test_accuracy(mod, model, data)
    for t in tried:
        t["chosen"] = t["arch"] == small.name
    extra = {"pruned_from": {
        "run": str(run.path), "arch": base_arch(run.metrics) or run.arch,
        "parent_arch": run.arch, "parent_macs": arch.macs,
        "native_sha256": run.metrics.get("native_sha256"),
        "val_accuracy": parent_val, "test_accuracy": run.metrics.get("test_accuracy"),
        "keep": cand["keep"], "widths": cand["widths"], "max_drop": max_drop,
        "method": "L1 filter norm x BN scale, structured",
        "candidates": tried, "parent_config": asdict(base)}}
    return write_run(outs[small.name], cfg, small, model, result, extra), tried
