"""PyTorch: an nn.Module built from the arch spec, and an explicit training loop.

The whole data set lives in memory as one tensor; a batch is an index into a permutation, so
there is no per-sample Python work (the usual Dataset/DataLoader pipeline spends most of its
time there on MNIST).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import archs as A
from ..errors import DeviceError

LAYOUT = "NCHW"


class Normalize(nn.Module):
    """(x - mean) / std inside the model, so exported graphs take [0, 1] pixels."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def build(arch: A.Arch, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, c = [], 1
    for spec, (c_out, _, _) in zip(arch.layers, arch.shapes()):
        if isinstance(spec, A.Normalize):
            layers.append(Normalize(spec.mean, spec.std))
        elif isinstance(spec, A.Conv):
            layers.append(nn.Conv2d(c, c_out, spec.k, padding=spec.pad, bias=spec.bias))
        elif isinstance(spec, A.BatchNorm):
            layers.append(nn.BatchNorm2d(c, eps=spec.eps, momentum=1 - spec.momentum))
        elif isinstance(spec, A.ReLU):
            layers.append(nn.ReLU())
        elif isinstance(spec, A.MaxPool):
            layers.append(nn.MaxPool2d(spec.k))
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


def device_check(device: str) -> torch.device:
    if device == "gpu":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device gpu: torch {torch.__version__} sees no CUDA device "
                f"(built with CUDA {torch.version.cuda or 'none'}); use --device cpu"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    # uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], once for the whole set.
    return torch.from_numpy(images).to(device).float().div_(255.0).unsqueeze(1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    model.eval()  # batch norm uses its running statistics, dropout is off
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                  for i in range(0, len(x), batch))
    return correct / len(x)


def fit(model: nn.Module, cfg, data, progress: bool = True) -> dict:
    from ..progress import progress_bar

    device = device_check(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    n = cfg.limit or len(data.x_train)
    x = to_tensor(data.x_train[:n], device)
    y = torch.from_numpy(data.y_train[:n].astype(np.int64)).to(device)
    xt = to_tensor(data.x_test, device)
    yt = torch.from_numpy(data.y_test.astype(np.int64)).to(device)

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    else:
        sched = None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)

    history, t_train, time_to_target = [], 0.0, None
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum, correct = 0.0, 0
        with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, progress) as advance:
            for i in range(steps_per_epoch):
                idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                xb, yb = x[idx], y[idx]
                if cfg.augment:
                    from .augment_torch import augment

                    xb = augment(xb, gen)
                out = model(xb)
                loss = loss_fn(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched:
                    sched.step()
                loss_sum += loss.item() * len(idx)
                correct += int((out.argmax(1) == yb).sum())
                if i % 20 == 0:
                    advance(20 if i else 1, info=f"loss {loss.item():.4f}")
        t_train += time.perf_counter() - t0
        acc = evaluate(model, xt, yt)
        history.append({"epoch": epoch + 1, "loss": loss_sum / n, "train_accuracy": correct / n,
                        "test_accuracy": acc, "seconds": t_train})
        if cfg.target_acc is not None and acc >= cfg.target_acc:
            time_to_target = t_train
            break
    model.to("cpu").eval()
    seen = sum(1 for _ in history) * n
    return {
        "epochs": len(history),
        "history": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "train_seconds": t_train,
        "train_images_per_second": seen / t_train if t_train else None,
        "time_to_target_seconds": time_to_target,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def save(model: nn.Module, run_dir: Path) -> str:
    torch.save(model.state_dict(), run_dir / "model.pt")
    return "model.pt"


def load(run_dir: Path, arch: A.Arch) -> nn.Module:
    model = build(arch)
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def logits(model: nn.Module, x01: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(np.ascontiguousarray(x01))).numpy().astype(np.float32)
