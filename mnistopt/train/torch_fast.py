"""The device-resident torch training loop: how GPU speed runs train MNIST, on any torch device.

What makes a small net fast on a GPU is not the arithmetic (an epoch of `lenet5` is a few
GFLOP) but everything around it: copies from the host, Python per sample, and the host waiting
for the GPU. So here

* the whole training set goes to the device once, as uint8 (55,000 x 784 bytes = 43 MB);
* every epoch is made there: a permutation (``argsort`` of device random numbers), a gather,
  the conversion to float and, with ``--augment``, the random shifts and rotations; a batch is
  then a slice of that tensor, with no DataLoader and no per-batch indexing;
* the step never reads a number back: loss and correct answers are summed into device tensors
  and read once per epoch, after the clock stops; the only per-step host work is launching;
* on CUDA: bf16 autocast (the matrix units' fast path; the loss stays float32), TF32 for the
  float32 rest, channels-last weights, cuDNN autotuning, Adam's fused kernel, and optionally
  ``torch.compile``. Warm-up steps run before the clock (autotuning, compilation), and the
  model is put back as it was, so the timed run starts from the same weights; their time is
  reported apart (``setup_seconds``).

On the CPU the same code runs (the tests exercise it there) with the CUDA-only parts off and
deterministic algorithms on: same seed, same weights. On CUDA runs are not bit-reproducible
(cuDNN's autotuner and atomics in the backward pass).
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .augment_torch import augment
from .torch_backend import device_check

AUGMENT_CHUNK = 8192  # images per augmentation call: bounds the sampling grid's memory


@dataclass(frozen=True)
class FastOptions:
    """How the fast loop runs; "auto" picks the CUDA-only features on CUDA alone."""

    amp: str = "auto"  # "bf16" | "off" | "auto" (bf16 where the device supports it)
    channels_last: str | bool = "auto"
    tf32: bool = True  # CUDA: float32 matmuls and convolutions on the TF32 units
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"
    compile_backend: str = "inductor"  # tests use "eager": the wrapping without code generation
    warmup_steps: int | None = None  # None: 3 on CUDA or when compiling, else 0
    betas: tuple[float, float] | None = None  # Adam's; None: torch's (0.9, 0.999)

    @classmethod
    def from_config(cls, cfg) -> "FastOptions":
        betas = getattr(cfg, "betas", None)
        return cls(compile=bool(getattr(cfg, "compile", False)),
                   betas=tuple(betas) if betas else None)


@dataclass(frozen=True)
class Resolved:
    """The options as they apply on this device."""

    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    warmup_steps: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def resolve(opts: FastOptions, device: torch.device) -> Resolved:
    cuda = device.type == "cuda"
    if opts.amp == "auto":
        amp = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    else:
        amp = torch.bfloat16 if opts.amp == "bf16" else None
    cl = cuda if opts.channels_last == "auto" else bool(opts.channels_last)
    warm = opts.warmup_steps if opts.warmup_steps is not None else (3 if cuda or opts.compile else 0)
    return Resolved(device, amp, cl, warm)


@contextmanager
def device_settings(r: Resolved, opts: FastOptions):
    """CUDA: autotuned cuDNN, TF32. CPU: deterministic kernels. Restored afterwards."""
    if r.cuda:
        saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                 torch.get_float32_matmul_precision())
        torch.backends.cudnn.benchmark = True  # every batch has one shape: tune it once
        if opts.tf32:
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[:2]
            torch.set_float32_matmul_precision(saved[2])
    else:
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(False)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work; nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_to_device(images, device) -> torch.Tensor:
    """uint8 (N, 28, 28) numpy -> uint8 (N, 1, 28, 28) on the device: a quarter of float32."""
    return torch.from_numpy(images).to(device).unsqueeze(1)


def labels_to_device(labels, device) -> torch.Tensor:
    return torch.from_numpy(labels).to(device).long()


def as_input(x8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = x8.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def epoch_tensors(x8, y, gen, augment_on: bool, channels_last: bool):
    """A fresh order of the training set, as float input (augmented if asked) and labels."""
    order = torch.rand(len(y), generator=gen, device=y.device).argsort()
    xe, ye = as_input(x8[order], False), y[order]
    if augment_on:
        xe = torch.cat([augment(xe[i:i + AUGMENT_CHUNK], gen) for i in range(0, len(xe), AUGMENT_CHUNK)])
    return (xe.contiguous(memory_format=torch.channels_last) if channels_last else xe), ye


@torch.no_grad()
def accuracy(model: nn.Module, x8, y, channels_last: bool, batch: int = 2500) -> float:
    """Correct answers summed on the device, read once. float32 (TF32 on CUDA), no autocast:
    the numbers the saved model gives."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for i in range(0, len(y), batch):
        correct += (model(as_input(x8[i:i + batch], channels_last)).argmax(1) == y[i:i + batch]).sum()
    return int(correct) / len(y)


def fit(model: nn.Module, cfg, data, log, opts: FastOptions | None = None) -> dict:
    """Train `model` on `data` (a `loop.Splits`) per `cfg`; `log` is the epoch bookkeeping."""
    opts = opts or FastOptions.from_config(cfg)
    r = resolve(opts, device_check(cfg.device))
    with device_settings(r, opts):
        facts = _fit(model, cfg, data, log, opts, r)
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    return {"torch_version": torch.__version__, "threads": torch.get_num_threads(), **facts}


def _warm_up(step_model, model, x, y, loss_fn, autocast, steps: int) -> float:
    """Forward and backward `steps` times on a real batch, then put the weights, batch-norm
    statistics and gradients back: autotuning and compilation happen here, off the clock."""
    if not steps:
        return 0.0
    saved = copy.deepcopy(model.state_dict())
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        with autocast():
            loss = loss_fn(step_model(x), y)
        loss.backward()
    sync(x.device)
    seconds = time.perf_counter() - t0
    model.load_state_dict(saved)
    model.zero_grad(set_to_none=True)
    return seconds


def _fit(model, cfg, data, log, opts: FastOptions, r: Resolved) -> dict:
    device, bs = r.device, cfg.batch_size
    t0 = time.perf_counter()
    model.to(device)
    if r.channels_last:
        model.to(memory_format=torch.channels_last)
    x8, y = images_to_device(data.x_train, device), labels_to_device(data.y_train, device)
    xv8, yv = images_to_device(data.x_val, device), labels_to_device(data.y_val, device)
    sync(device)
    to_device_s = time.perf_counter() - t0

    n = len(y)
    # Every step one shape (what cuDNN's autotuner and torch.compile want): the last, short
    # batch is dropped; a new order every epoch means no image is always the one left out.
    steps = max(1, n // bs)
    seen = min(n, steps * bs)
    autocast = ((lambda: torch.autocast(device.type, dtype=r.amp)) if r.amp is not None
                else nullcontext)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    step_model = model
    if opts.compile:
        step_model = torch.compile(model, mode=None if opts.compile_mode == "default" else opts.compile_mode,
                                   backend=opts.compile_backend)
    warm = _warm_up(step_model, model, as_input(x8[:bs], r.channels_last), y[:bs], loss_fn, autocast,
                    r.warmup_steps)

    # Seeded after the warm-up, so that it changes nothing that follows.
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    opt_cls = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
    kw = {"fused": True} if r.cuda else {}
    if opts.betas:
        kw["betas"] = opts.betas
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs,
                                                 cycle_momentum=opts.betas is None)
             if cfg.schedule == "onecycle" else None)

    for epoch in range(cfg.epochs):
        sync(device)  # the clock starts on an idle device
        advance = log.begin(epoch)
        model.train()
        xe, ye = epoch_tensors(x8, y, gen, cfg.augment, r.channels_last)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for i in range(steps):
            xb, yb = xe[i * bs:(i + 1) * bs], ye[i * bs:(i + 1) * bs]
            with autocast():
                out = step_model(xb)
                loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            loss_sum += loss.detach()
            correct += (out.argmax(1) == yb).sum()
            if i % 20 == 19:
                advance(20)  # the bar alone: no number is read back inside the epoch
        sync(device)  # the clock stops when the device has finished the epoch
        if log.end(float(loss_sum) / steps, int(correct) / seen,
                   lambda: accuracy(model, xv8, yv, r.channels_last)):
            break
    return {
        "loop": "fast",
        "fast": {**asdict(opts), "device": str(device), "amp": str(r.amp).replace("torch.", "") if r.amp else None,
                 "channels_last": r.channels_last, "warmup_steps": r.warmup_steps,
                 "steps_per_epoch": steps, "images_per_epoch": seen},
        "setup_seconds": {"to_device": to_device_s, "warmup": warm, "compile": warm if opts.compile else None},
    }
