"""Plain TensorFlow: the model as a tf.Module of tf.Variables, trained with GradientTape.

No Keras model, no ``fit``: every piece the other two trainers get from their framework is
written out here -- the layers (including batch norm and its moving averages), the Adam update,
the loop. It is the closest TensorFlow gets to the PyTorch trainer, and shows what
``model.fit`` does for you.

Layout is NHWC (TensorFlow's native order): images are (N, 28, 28, 1). The saved model is a
SavedModel directory whose ``serving_default`` signature takes float32 ``images``
[None, 28, 28, 1] in [0, 1] and returns ``{"logits": [None, 10]}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from .. import archs as A
from ..errors import DeviceError, RunError
from .schedule import lr_at

LAYOUT = "NHWC"
IMAGES = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")


# ---------------------------------------------------------------------------------------------
# Layers. Each is a tf.Module: TensorFlow then finds its tf.Variables (for the gradient tape,
# the optimizer and the SavedModel) by walking the attributes, as torch's nn.Module does.

def _uniform(shape, fan_in, seed):
    # torch's default initialisation (kaiming_uniform with a=sqrt(5) == U(-1/sqrt(fan_in), +)),
    # so the three frameworks start from comparable weights. Stateless: same seed, same values.
    bound = 1.0 / math.sqrt(fan_in)
    return tf.random.stateless_uniform(shape, seed=seed, minval=-bound, maxval=bound)


class Normalize(tf.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def __call__(self, x, training=False):
        return (x - self.mean) / self.std


class Conv(tf.Module):
    """A full conv, or with `depthwise` one filter set per input channel (no channel mixing)."""

    def __init__(self, c_in, spec, seed, depthwise: bool = False):
        super().__init__()
        self.depthwise, self.stride = depthwise, spec.stride
        # torch's fan-in: what one output sums over (a depthwise output sees one channel).
        fan_in = spec.k * spec.k * (1 if depthwise else c_in)
        shape = [spec.k, spec.k, c_in, spec.multiplier if depthwise else spec.out]
        c_out = c_in * spec.multiplier if depthwise else spec.out
        self.w = tf.Variable(_uniform(shape, fan_in, seed), name="kernel")
        self.b = tf.Variable(_uniform([c_out], fan_in, [seed[0], seed[1] + 1]), name="bias") if spec.bias else None
        # Explicit zero padding of H and W, the same numbers the spec (and torch) use.
        self.padding = [[0, 0], [spec.pad, spec.pad], [spec.pad, spec.pad], [0, 0]] if spec.pad else "VALID"

    def __call__(self, x, training=False):
        if self.depthwise:
            # Explicit padding inside DepthwiseConv2dNative aborts TF 2.21's graph optimizer
            # (tensor_format.h check failure) with a dynamic batch: pad first, then VALID.
            if self.padding != "VALID":
                x = tf.pad(x, self.padding)
            x = tf.nn.depthwise_conv2d(x, self.w, strides=[1, self.stride, self.stride, 1], padding="VALID")
        else:
            x = tf.nn.conv2d(x, self.w, strides=self.stride, padding=self.padding)
        return x + self.b if self.b is not None else x


class BatchNorm(tf.Module):
    """Batch normalisation by hand.

    Training: normalise with the batch's own mean and variance (which is what makes deep nets
    train fast), and keep exponential moving averages of them. Inference: use those averages,
    so a prediction does not depend on which other images share the batch.
    """

    def __init__(self, c, spec: A.BatchNorm):
        super().__init__()
        self.eps, self.momentum = spec.eps, spec.momentum
        self.gamma = tf.Variable(tf.ones([c]), name="gamma")   # learned scale
        self.beta = tf.Variable(tf.zeros([c]), name="beta")    # learned shift
        # trainable=False: statistics, not parameters; the tape and the optimizer skip them.
        self.moving_mean = tf.Variable(tf.zeros([c]), trainable=False, name="moving_mean")
        self.moving_var = tf.Variable(tf.ones([c]), trainable=False, name="moving_variance")

    def __call__(self, x, training=False):
        if training:
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])  # per channel over batch, H, W
            m = self.momentum  # weight of the old value (Keras' convention)
            self.moving_mean.assign(m * self.moving_mean + (1 - m) * mean)
            self.moving_var.assign(m * self.moving_var + (1 - m) * var)
        else:
            mean, var = self.moving_mean, self.moving_var
        return tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, self.eps)


class Dense(tf.Module):
    def __init__(self, c_in, c_out, seed):
        super().__init__()
        self.w = tf.Variable(_uniform([c_in, c_out], c_in, seed), name="kernel")
        self.b = tf.Variable(_uniform([c_out], c_in, [seed[0], seed[1] + 1]), name="bias")

    def __call__(self, x, training=False):
        return x @ self.w + self.b


class Fn(tf.Module):
    """A layer without weights."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __call__(self, x, training=False):
        return self.fn(x)


class Dropout(tf.Module):
    def __init__(self, rate, seed):
        super().__init__()
        self.rate = rate
        self.rng = tf.random.Generator.from_seed(seed)  # its state is a variable: reproducible

    def __call__(self, x, training=False):
        if not training:
            return x
        seed = self.rng.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed=seed)


class Net(tf.Module):
    """The arch's layers in order; `serve` is what the SavedModel exports."""

    def __init__(self, arch: A.Arch, seed: int = 0):
        super().__init__(name=arch.name)
        self.layers, c = [], 1
        for i, (spec, (c_out, _, _)) in enumerate(zip(arch.layers, arch.shapes())):
            s = [seed, 2 * i]  # stateless seeds per layer: [seed, 2i] weights, [seed, 2i+1] bias
            if isinstance(spec, A.Normalize):
                layer = Normalize(spec.mean, spec.std)
            elif isinstance(spec, (A.Conv, A.DepthwiseConv)):
                layer = Conv(c, spec, s, depthwise=isinstance(spec, A.DepthwiseConv))
            elif isinstance(spec, A.BatchNorm):
                layer = BatchNorm(c, spec)
            elif isinstance(spec, A.ReLU):
                layer = Fn(tf.nn.relu)
            elif isinstance(spec, A.MaxPool):
                layer = Fn(lambda x, k=spec.k: tf.nn.max_pool2d(x, k, k, "VALID"))
            elif isinstance(spec, A.AvgPool):
                layer = Fn(lambda x, k=spec.k: tf.nn.avg_pool2d(x, k, k, "VALID"))
            elif isinstance(spec, A.GlobalAvgPool):
                layer = Fn(lambda x: tf.reduce_mean(x, axis=[1, 2]))
            elif isinstance(spec, A.Flatten):
                # NHWC flattens in (h, w, c) order, torch in (c, h, w): same size, own weights.
                layer = Fn(lambda x, n=c_out: tf.reshape(x, [-1, n]))
            elif isinstance(spec, A.Dense):
                layer = Dense(c, c_out, s)
            elif isinstance(spec, A.Dropout):
                layer = Dropout(spec.rate, seed * 1000 + i)
            else:  # pragma: no cover - a new spec type without a builder is a bug
                raise TypeError(f"no tf builder for {spec!r}")
            self.layers.append(layer)
            c = c_out

    def __call__(self, x, training=False):
        # `training` is a Python bool, so tf.function traces one graph for each value: batch
        # norm and dropout switch behaviour at trace time, at no cost per call.
        for layer in self.layers:
            x = layer(x, training=training)
        return x

    @tf.function(input_signature=[IMAGES])
    def serve(self, images):
        """Inference graph: [0, 1] pixels in, logits out. The SavedModel's serving signature."""
        return {"logits": self(images, training=False)}


def build(arch: A.Arch, seed: int = 0) -> Net:
    return Net(arch, seed)


# What each layer Module calls its variables, by role (`archs.arrays`).
_TF_NAMES = {"w": "w", "b": "b", "gamma": "gamma", "beta": "beta", "mean": "moving_mean",
             "var": "moving_var"}


def layer_names(arch: A.Arch) -> list[dict[str, str]]:
    """Per spec layer, its arrays -> their names in `weights` (one Module per spec layer:
    layers.<index>.<attribute>, as `_variables` names them)."""
    return [{k: f"layers.{i}.{_TF_NAMES[k]}" for k in A.arrays(spec)}
            for i, spec in enumerate(arch.layers)]


# ---------------------------------------------------------------------------------------------
# The optimizer and augmentation, in TensorFlow ops.

class Adam(tf.Module):
    """Adam (Kingma & Ba 2015), with decoupled weight decay (AdamW) when asked.

    Per weight it keeps a running mean of the gradient (m: direction, smoothed) and of its
    square (v: scale), so every weight gets a step of about `lr` whatever its gradient's size.
    Same role as `optimizer.apply_gradients` in Keras or `optimizer.step()` in torch.
    """

    def __init__(self, variables, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__()
        self.beta1, self.beta2, self.eps, self.wd = beta1, beta2, eps, weight_decay
        self.lr = tf.Variable(1e-3, trainable=False)  # set each step by the schedule
        self.t = tf.Variable(0.0, trainable=False)
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    def apply_gradients(self, grads_and_vars):
        self.t.assign_add(1.0)
        # Bias correction: m and v start at zero, so early averages are too small.
        lr = self.lr * tf.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        for (g, var), m, v in zip(grads_and_vars, self.m, self.v):
            m.assign(self.beta1 * m + (1 - self.beta1) * g)
            v.assign(self.beta2 * v + (1 - self.beta2) * tf.square(g))
            if self.wd:
                var.assign_sub(self.lr * self.wd * var)
            var.assign_sub(lr * m / (tf.sqrt(v) + self.eps))


def augment(x, rng: tf.random.Generator, max_deg=10.0, max_shift=2.0):
    """Random rotation (+-max_deg) and shift (+-max_shift px) of every image of a batch.

    One projective-transform op for the whole batch (the kernel Keras' RandomRotation and
    RandomTranslation use). The transform maps each output pixel back to where it is read
    from in the input; pixels from outside the image are black (0).
    """
    n = tf.shape(x)[0]
    theta = rng.uniform([n], -max_deg, max_deg) * (math.pi / 180)
    tx, ty = rng.uniform([n], -max_shift, max_shift), rng.uniform([n], -max_shift, max_shift)
    cos, sin, c = tf.cos(theta), tf.sin(theta), 13.5  # rotate about the image centre
    zeros = tf.zeros_like(theta)
    transforms = tf.stack([cos, -sin, c - cos * c + sin * c - tx,
                           sin, cos, c - sin * c - cos * c - ty, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


# ---------------------------------------------------------------------------------------------
# Training.

def device_check(device: str) -> str:
    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise DeviceError(
                f"--device gpu: TensorFlow {tf.__version__} sees no GPU "
                f"(looked for physical devices of type GPU; built with CUDA: "
                f"{tf.test.is_built_with_cuda()}); use --device cpu"
            )
        return "/GPU:0"
    return "/CPU:0"


def to_tensor(images: np.ndarray) -> tf.Tensor:
    # uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], once for the whole set.
    return tf.constant(images[..., None].astype(np.float32) / 255.0)


def evaluate(net: Net, x: tf.Tensor, y: np.ndarray, batch: int = 2000) -> float:
    pred = np.concatenate([net.serve(x[i:i + batch])["logits"].numpy().argmax(1)
                           for i in range(0, len(y), batch)])
    return float((pred == y).mean())


def fit(net: Net, cfg, data, log) -> dict:
    """Train `net` on `data.x_train` (a `loop.Splits`); `log` keeps time, history and stops."""
    device = device_check(cfg.device)
    if cfg.device == "cpu":
        # Same seed, same result: deterministic kernels (cheap on CPU; on a GPU some kernels
        # have no deterministic version, so there we leave TensorFlow free).
        tf.config.experimental.enable_op_determinism()
    n = len(data.x_train)
    with tf.device(device):
        x, y = to_tensor(data.x_train), tf.constant(data.y_train.astype(np.int32))
        xv, yv = to_tensor(data.x_val), data.y_val.astype(np.int64)
    opt = Adam(net.trainable_variables, weight_decay=cfg.weight_decay)
    aug_rng = tf.random.Generator.from_seed(cfg.seed + 1)
    variables = net.trainable_variables  # gammas, betas, kernels, biases; not moving stats

    # tf.function traces this Python function once into a graph, then runs the graph: no
    # Python per op, and TensorFlow can fuse and schedule the ops. reduce_retracing keeps the
    # smaller last batch from tracing a second graph.
    @tf.function(reduce_retracing=True)
    def train_step(xb, yb):
        if cfg.augment:
            xb = augment(xb, aug_rng)
        # The tape records the forward pass so it can be replayed backwards for gradients
        # (torch records on the tensors themselves; TensorFlow only inside a tape).
        with tf.GradientTape() as tape:
            out = net(xb, training=True)  # training=True: batch statistics in batch norm
            if cfg.label_smoothing:
                target = tf.one_hot(yb, 10) * (1 - cfg.label_smoothing) + cfg.label_smoothing / 10
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, out))
            else:
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, out))
        # Gradients are returned, not accumulated into the variables: nothing to zero first
        # (torch's optimizer.zero_grad() has no equivalent here).
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(out, 1, output_type=tf.int32), yb), tf.int32))
        return loss, correct

    rng = np.random.default_rng(cfg.seed)  # the shuffling permutation, seeded
    steps, step = log.steps, 0
    for epoch in range(cfg.epochs):
        advance = log.begin(epoch)
        perm = tf.constant(rng.permutation(n))
        loss_sum, correct = tf.constant(0.0), tf.constant(0)
        with tf.device(device):
            for i in range(steps):
                idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                opt.lr.assign(lr_at(step, steps * cfg.epochs, cfg.lr, cfg.schedule))
                loss, c = train_step(tf.gather(x, idx), tf.gather(y, idx))
                step += 1
                # Tensors, summed lazily: converting to Python each step would wait for it.
                loss_sum += loss * tf.cast(tf.size(idx), tf.float32)
                correct += c
                if i % 20 == 19:
                    advance(20, info=f"loss {float(loss):.4f}")
            stop = log.end(float(loss_sum) / n, int(correct) / n, lambda: evaluate(net, xv, yv))
        if stop:
            break
    return {"tensorflow_version": tf.__version__}


def save(net: Net, run_dir: Path) -> str:
    # Only what `net` references is saved: the variables and `serve`. The optimizer and the
    # training step are not attached to it, so the SavedModel is the inference graph alone.
    tf.saved_model.save(net, str(run_dir / "saved_model"), signatures={"serving_default": net.serve})
    return "saved_model"


def _variables(net: Net) -> dict[str, tf.Variable]:
    """Every variable of `net` by its place: layers.<index>.<attribute>."""
    return {f"layers.{i}.{k}": v for i, layer in enumerate(net.layers)
            for k, v in sorted(vars(layer).items()) if isinstance(v, tf.Variable)}


def weights(net: Net) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in _variables(net).items()}


def set_weights(net: Net, arrays: dict[str, np.ndarray]) -> None:
    for k, v in _variables(net).items():
        v.assign(arrays[k])


def load(run_dir: Path, arch: A.Arch):
    """The restored SavedModel object (it has `.serve` like a freshly built Net). This runs
    the graph stored in the run: train/weights.py calls it only for a run the user trusts."""
    try:
        return tf.saved_model.load(str(run_dir / "saved_model"))
    except Exception as exc:  # truncated or not a SavedModel
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise RunError(f"{run_dir / 'saved_model'}: cannot load ({first})") from None


def logits(model, x01: np.ndarray) -> np.ndarray:
    return model.serve(tf.constant(x01, tf.float32))["logits"].numpy().astype(np.float32)
