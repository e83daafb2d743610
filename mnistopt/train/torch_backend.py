"""PyTorch: an nn.Module built from the arch spec, and an explicit training loop.

Read top to bottom, this file is the whole story of training a classifier in PyTorch:
build the network, put the data on the device, then for every batch run the four steps
forward -> loss -> backward -> update, and after every epoch measure the validation accuracy.

The whole data set lives in memory as one tensor (60,000 x 1 x 28 x 28 float32 = 188 MB); a
batch is an index into a random permutation, so there is no per-sample Python work. The usual
Dataset/DataLoader pipeline converts and normalises every image in Python one by one, which
on MNIST costs about as much as the network itself (see `mnistopt.train.speed`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import archs as A
from ..errors import DeviceError, RunError
from .augment_torch import augment

LAYOUT = "NCHW"  # torch's native order: (batch, channels, height, width)


# ---------------------------------------------------------------------------------------------
# 1. The model.

class Normalize(nn.Module):
    """(x - mean) / std inside the model, so exported graphs take [0, 1] pixels."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def _modules(spec, c: int, c_out: int) -> list[nn.Module]:
    """The torch modules of one spec layer (`c` channels or features in, `c_out` out)."""
    if isinstance(spec, A.Normalize):
        return [Normalize(spec.mean, spec.std)]
    if isinstance(spec, A.Conv):
        return [nn.Conv2d(c, c_out, spec.k, stride=spec.stride, padding=spec.pad, bias=spec.bias)]
    if isinstance(spec, A.DepthwiseConv):
        # groups=c: every input channel gets its own `multiplier` filters, none mixes channels.
        return [nn.Conv2d(c, c_out, spec.k, stride=spec.stride, padding=spec.pad, bias=spec.bias,
                          groups=c)]
    if isinstance(spec, A.BatchNorm):
        # torch's momentum is the weight of the *new* batch statistic; the spec follows Keras
        # (weight of the old running value), hence 1 - momentum.
        return [nn.BatchNorm2d(c, eps=spec.eps, momentum=1 - spec.momentum)]
    if isinstance(spec, A.ReLU):
        return [nn.ReLU()]
    if isinstance(spec, A.MaxPool):
        return [nn.MaxPool2d(spec.k)]
    if isinstance(spec, A.AvgPool):
        return [nn.AvgPool2d(spec.k)]
    if isinstance(spec, A.GlobalAvgPool):
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if isinstance(spec, A.Flatten):
        return [nn.Flatten()]
    if isinstance(spec, A.Dense):
        return [nn.Linear(c, c_out)]
    if isinstance(spec, A.Dropout):
        return [nn.Dropout(spec.rate)]
    raise TypeError(f"no torch builder for {spec!r}")  # a new spec type without a builder is a bug


def _per_layer(arch: A.Arch) -> list[list[nn.Module]]:
    c, out = 1, []  # c: channels (or features) coming into the next layer
    for spec, (c_out, _, _) in zip(arch.layers, arch.shapes()):
        out.append(_modules(spec, c, c_out))
        c = c_out
    return out


def build(arch: A.Arch, seed: int = 0) -> nn.Sequential:
    """The spec's layers in order, one or more torch modules each. The seed fixes the initial
    weights."""
    torch.manual_seed(seed)
    return nn.Sequential(*(m for mods in _per_layer(arch) for m in mods))


# What torch calls each of a layer's arrays (`archs.arrays`).
_TORCH_NAMES = {"w": "weight", "b": "bias", "gamma": "weight", "beta": "bias",
                "mean": "running_mean", "var": "running_var"}


def layer_names(arch: A.Arch) -> list[dict[str, str]]:
    """Per spec layer, its arrays -> their names in `weights` (the Sequential's index of the
    layer's first module: a global average pool takes two)."""
    # Shapes only: no memory for the weights, and the global RNG left as it was.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        per_layer = _per_layer(arch)
    out, idx = [], 0
    for spec, mods in zip(arch.layers, per_layer):
        out.append({k: f"{idx}.{_TORCH_NAMES[k]}" for k in A.arrays(spec)})
        idx += len(mods)
    return out


# ---------------------------------------------------------------------------------------------
# 2. Device and data.

def device_check(device: str) -> torch.device:
    if device == "gpu":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device gpu: torch {torch.__version__} sees no CUDA device "
                f"(looked with torch.cuda.is_available(); built with CUDA "
                f"{torch.version.cuda or 'none'}); use --device cpu"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    # uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], once for the whole set.
    return torch.from_numpy(images).to(device).float().div_(255.0).unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# 3. Evaluation.

# no_grad: we will not call backward() on these outputs, so torch need not remember the
# intermediate results of the forward pass: less memory, faster.
@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    # eval(): batch norm uses the running statistics it learned in training (not the test
    # batch's own), dropout keeps every unit. Forgetting this is a classic silent bug.
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                  for i in range(0, len(x), batch))
    return correct / len(x)


# ---------------------------------------------------------------------------------------------
# 4. Training.

def fit(model: nn.Module, cfg, data, log) -> dict:
    """Train `model` on `data.x_train` (a `loop.Splits`); `log` keeps time, history and stops.

    On a GPU (or with `--loop fast`) the device-resident loop of `torch_fast` runs instead:
    the same steps, arranged so that the host never waits for the device inside an epoch.
    """
    if cfg.uses_fast_loop():
        from .torch_fast import fit as fit_fast

        return fit_fast(model, cfg, data, log)
    device = device_check(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cpu":
        # Same seed, same result: refuse kernels whose results depend on thread timing.
        torch.use_deterministic_algorithms(True)
    try:
        _fit(model, cfg, data, log, device)
    finally:
        torch.use_deterministic_algorithms(False)
    model.to("cpu").eval()
    return {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "loop": "standard"}


def _labels(y: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(y.astype(np.int64)).to(device)


def _fit(model: nn.Module, cfg, data, log, device) -> None:
    model.to(device)
    n = len(data.x_train)
    x, y = to_tensor(data.x_train, device), _labels(data.y_train, device)
    xv, yv = to_tensor(data.x_val, device), _labels(data.y_val, device)

    # Adam: a per-weight step size from running averages of the gradient and its square.
    # AdamW applies weight decay to the weights directly (decoupled), as Keras' Adam does,
    # rather than adding it to the gradient where Adam's scaling would undo it.
    opt_cls = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = log.steps
    # One-cycle: warm up from lr/25 to lr over 30 % of the steps, then cosine down to ~0.
    # The big steps in the middle explore; the small ones at the end settle into a minimum.
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps_per_epoch * cfg.epochs)
             if cfg.schedule == "onecycle" else None)
    # Cross-entropy on raw logits: softmax + log + negative likelihood in one stable op.
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation, reproducible

    for epoch in range(cfg.epochs):
        # train(): batch norm normalises with each batch's statistics and updates its running
        # averages; dropout drops. evaluate() switches back with eval().
        model.train()
        advance = log.begin(epoch)
        perm = torch.randperm(n, generator=gen).to(device)  # a new order every epoch
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if cfg.augment:
                xb = augment(xb, gen)
            # Forward: torch records every operation on the way (the autograd graph)...
            out = model(xb)
            loss = loss_fn(out, yb)
            # ...zero_grad: backward() *adds* into each parameter's .grad, so clear the last
            # batch's gradients first (set_to_none frees them instead of writing zeros)...
            opt.zero_grad(set_to_none=True)
            # ...backward: walk that graph in reverse, filling p.grad = d loss / d p...
            loss.backward()
            # ...step: move every parameter against its gradient (Adam's rule, current lr).
            opt.step()
            if sched:
                sched.step()  # the schedule advances per batch, not per epoch
            # Sums stay on the device: .item() would wait for the GPU on every batch.
            loss_sum += loss.detach() * len(idx)
            correct += (out.argmax(1) == yb).sum()
            if i % 20 == 19:
                advance(20, info=f"loss {loss.item():.4f}")
        if log.end(float(loss_sum) / n, int(correct) / n, lambda: evaluate(model, xv, yv)):
            break


# ---------------------------------------------------------------------------------------------
# 5. Saving, loading, inference.

def save(model: nn.Module, run_dir: Path) -> str:
    # The state_dict is only tensors (weights and batch-norm statistics): what torch users
    # load. mnistopt itself reads weights.npz (train/weights.py).
    torch.save(model.state_dict(), run_dir / "model.pt")
    return "model.pt"


def weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    model.eval()


def load(run_dir: Path, arch: A.Arch) -> nn.Module:
    """A run written before weights.npz: its state_dict, read with weights_only=True."""
    import pickle
    import re

    from .weights import check

    path = run_dir / "model.pt"
    model = build(arch)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message runs to six lines and suggests weights_only=False, which would
        # execute whatever the file holds; it names the global it refused, if that was it.
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if named is None:
            raise RunError(f"{path}: cannot load (not a torch state_dict file)") from None
        raise RunError(f"{path}: refused: it holds more than tensors (it names "
                       f"{named.group(1)}), and loading it could run code; not a state_dict "
                       "mnistopt wrote") from None
    except Exception as exc:  # truncated, not a zip, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise RunError(f"{path}: cannot load ({first})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise RunError(f"{path}: not a state_dict (a dict of tensors)")
    arrays = {k: v.numpy() for k, v in state.items()}
    set_weights(model, check(path, arrays, weights(model)))
    return model


@torch.no_grad()
def logits(model: nn.Module, x01: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(np.ascontiguousarray(x01))).numpy().astype(np.float32)
