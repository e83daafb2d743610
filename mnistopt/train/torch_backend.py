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


def build(arch: A.Arch, seed: int = 0) -> nn.Sequential:
    """One torch layer per spec layer, in order. The seed fixes the initial weights."""
    torch.manual_seed(seed)
    layers, c = [], 1  # c: channels (or features) coming into the next layer
    for spec, (c_out, _, _) in zip(arch.layers, arch.shapes()):
        if isinstance(spec, A.Normalize):
            layers.append(Normalize(spec.mean, spec.std))
        elif isinstance(spec, A.Conv):
            layers.append(nn.Conv2d(c, c_out, spec.k, stride=spec.stride, padding=spec.pad, bias=spec.bias))
        elif isinstance(spec, A.DepthwiseConv):
            # groups=c: every input channel gets its own `multiplier` filters, none mixes channels.
            layers.append(nn.Conv2d(c, c_out, spec.k, stride=spec.stride, padding=spec.pad,
                                    bias=spec.bias, groups=c))
        elif isinstance(spec, A.BatchNorm):
            # torch's momentum is the weight of the *new* batch statistic; the spec follows
            # Keras (weight of the old running value), hence 1 - momentum.
            layers.append(nn.BatchNorm2d(c, eps=spec.eps, momentum=1 - spec.momentum))
        elif isinstance(spec, A.ReLU):
            layers.append(nn.ReLU())
        elif isinstance(spec, A.MaxPool):
            layers.append(nn.MaxPool2d(spec.k))
        elif isinstance(spec, A.AvgPool):
            layers.append(nn.AvgPool2d(spec.k))
        elif isinstance(spec, A.GlobalAvgPool):
            layers.append(nn.AdaptiveAvgPool2d(1))
            layers.append(nn.Flatten())
        elif isinstance(spec, A.Flatten):
            layers.append(nn.Flatten())
        elif isinstance(spec, A.Dense):
            layers.append(nn.Linear(c, c_out))
        elif isinstance(spec, A.Dropout):
            layers.append(nn.Dropout(spec.rate))
        else:  # pragma: no cover - a new spec type without a builder is a bug
            raise TypeError(f"no torch builder for {spec!r}")
        c = c_out
    return nn.Sequential(*layers)


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
    # The state_dict is only tensors (weights and batch-norm statistics); the architecture is
    # rebuilt from the arch spec on load, so no pickled code is ever executed.
    torch.save(model.state_dict(), run_dir / "model.pt")
    return "model.pt"


def load(run_dir: Path, arch: A.Arch) -> nn.Module:
    model = build(arch)
    try:
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # truncated file, or weights of another architecture
        raise RunError(f"{run_dir / 'model.pt'}: cannot load as '{arch.name}' ({exc})") from None
    return model.eval()


@torch.no_grad()
def logits(model: nn.Module, x01: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(np.ascontiguousarray(x01))).numpy().astype(np.float32)
