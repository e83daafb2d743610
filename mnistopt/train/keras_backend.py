"""Keras 3: a Sequential model built from the arch spec, trained the Keras way (compile + fit).

Keras hides the training loop that the PyTorch trainer writes out: ``compile`` picks the
optimizer, loss and metrics; ``fit`` runs forward pass, loss, gradients and weight update for
every batch (inside a compiled ``tf.function``), shuffles the in-memory arrays by a fresh
permutation each epoch, and calls our callbacks between batches and epochs. What stays ours is
the model, the learning-rate schedule, and the hooks into `loop.EpochLog` (progress,
validation, early stopping).

Layout is NHWC (TensorFlow's native order): images are (N, 28, 28, 1).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .. import archs as A
from ..errors import RunError
from .schedule import lr_at
from .tf_backend import device_check  # noqa: F401  (Keras runs on the same TensorFlow devices)

LAYOUT = "NHWC"


@keras.saving.register_keras_serializable("mnistopt")
class FlattenTo(keras.layers.Layer):
    """Flatten to a constant width. Keras' Flatten reshapes to (shape(x)[0], n), which the
    TFLite converter keeps as SHAPE / STRIDED_SLICE / PACK ops that XNNPACK does not take:
    the int8 file ran in two delegate partitions with LiteRT kernels between them."""

    def __init__(self, n: int, **kw):
        super().__init__(**kw)
        self.n = int(n)

    def call(self, x):
        return keras.ops.reshape(x, (-1, self.n))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


def _layers(spec, c_out: int, seed: int) -> list:
    """The Keras layers of one spec layer (`c_out` channels or features out)."""
    if isinstance(spec, A.Normalize):
        # (x - mean) / std == x * (1/std) + (-mean/std): part of the model, so every export
        # takes the raw image scaled to [0, 1].
        return [keras.layers.Rescaling(1 / spec.std, offset=-spec.mean / spec.std)]
    if isinstance(spec, (A.Conv, A.DepthwiseConv)):
        # Explicit zero padding then a "valid" conv: the same numbers as torch's padding=p
        # even with stride 2, where Keras' "same" would pad one side only.
        pad = [keras.layers.ZeroPadding2D(spec.pad)] if spec.pad else []
        if isinstance(spec, A.Conv):
            return pad + [keras.layers.Conv2D(spec.out, spec.k, strides=spec.stride, use_bias=spec.bias)]
        return pad + [keras.layers.DepthwiseConv2D(spec.k, strides=spec.stride, use_bias=spec.bias,
                                                   depth_multiplier=spec.multiplier)]
    if isinstance(spec, A.BatchNorm):
        return [keras.layers.BatchNormalization(epsilon=spec.eps, momentum=spec.momentum)]
    if isinstance(spec, A.ReLU):
        return [keras.layers.ReLU()]
    if isinstance(spec, A.MaxPool):
        return [keras.layers.MaxPooling2D(spec.k)]
    if isinstance(spec, A.AvgPool):
        return [keras.layers.AveragePooling2D(spec.k)]
    if isinstance(spec, A.GlobalAvgPool):
        return [keras.layers.GlobalAveragePooling2D()]
    if isinstance(spec, A.Flatten):
        return [FlattenTo(c_out)]
    if isinstance(spec, A.Dense):
        return [keras.layers.Dense(spec.out)]
    if isinstance(spec, A.Dropout):
        return [keras.layers.Dropout(spec.rate, seed=seed)]
    raise TypeError(f"no keras builder for {spec!r}")  # a new spec type without a builder is a bug


def _per_layer(arch: A.Arch, seed: int = 0) -> list[list]:
    return [_layers(spec, c_out, seed) for spec, (c_out, _, _) in zip(arch.layers, arch.shapes())]


def build(arch: A.Arch, seed: int = 0) -> keras.Model:
    """The inference model: raw [0, 1] pixels in, 10 logits out. No augmentation inside."""
    keras.utils.set_random_seed(seed)  # seeds Python, numpy and TF: the initial weights
    layers = [keras.Input((28, 28, 1), name="images")]
    layers += [la for per in _per_layer(arch, seed) for la in per]
    return keras.Sequential(layers, name=arch.name)


def layer_names(arch: A.Arch) -> list[dict[str, str]]:
    """Per spec layer, its arrays -> their names in `weights` (layers.<the Keras layer's
    position>.<its get_weights() index>; a padded conv is ZeroPadding2D + the conv, whose
    arrays are the second's)."""
    out, idx = [], 0
    for spec, per in zip(arch.layers, _per_layer(arch)):  # unbuilt layers: no weights made
        out.append({k: f"layers.{idx + len(per) - 1}.{j}" for j, k in enumerate(A.arrays(spec))})
        idx += len(per)
    return out




def augmenter(seed: int) -> keras.Sequential:
    """Random shifts (up to 2 px) and rotations (up to ~10 degrees), drawn per image.

    Keras' preprocessing layers act only when called with training=True, and they work on
    whole batches with TensorFlow image ops: no per-sample Python.
    """
    return keras.Sequential([
        keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
        keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=seed + 1),
    ], name="augment")


class _Loop(keras.callbacks.Callback):
    """Learning-rate schedule and progress per batch; `EpochLog` (validation, stop) per epoch."""

    def __init__(self, model, cfg, log, xv, yv):
        super().__init__()
        self.net, self.cfg, self.log, self.xv, self.yv = model, cfg, log, xv, yv
        self.step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._advance = self.log.begin(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        # Keras would also take a LearningRateSchedule object; a plain assignment keeps the
        # schedule identical to the TensorFlow trainer's and leaves nothing custom to serialise.
        self.model.optimizer.learning_rate.assign(
            lr_at(self.step, self.log.steps * self.cfg.epochs, self.cfg.lr, self.cfg.schedule))
        self.step += 1

    def on_train_batch_end(self, batch, logs=None):
        if batch % 20 == 19:  # logs hold the running mean of the epoch so far
            self._advance(20, info=f"loss {float(logs['loss']):.4f} acc {float(logs['accuracy']):.2%}")

    def on_epoch_end(self, epoch, logs=None):
        if self.log.end(float(logs["loss"]), float(logs["accuracy"]), self.validate):
            self.model.stop_training = True

    def validate(self) -> float:
        # training=False (what predict uses): batch norm uses its moving averages, dropout is off.
        pred = self.net.predict(self.xv, batch_size=2000, verbose=0)
        return float((pred.argmax(1) == self.yv).mean())


def fit(model: keras.Model, cfg, data, log) -> dict:
    """Train `model` on `data.x_train` (a `loop.Splits`); `log` keeps time, history and stops."""
    device = device_check(cfg.device)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.device == "cpu":
        # Same seed, same result: deterministic kernels (cheap on CPU; on a GPU some kernels
        # have no deterministic version, so there we leave TensorFlow free).
        tf.config.experimental.enable_op_determinism()
    # The whole set in memory as one float32 NHWC tensor in [0, 1]; fit slices batches out of it.
    with tf.device(device):
        x = tf.constant((data.x_train.astype(np.float32) / 255.0)[..., None])
    y = data.y_train.astype(np.int64)
    xv = (data.x_val.astype(np.float32) / 255.0)[..., None]
    yv = data.y_val.astype(np.int64)

    # Train through a wrapper (with augmentation in front when asked): the weights are shared,
    # and the saved model stays the clean, never-compiled inference graph.
    trainer = keras.Sequential(([augmenter(cfg.seed)] if cfg.augment else []) + [model], name="trainer")
    if cfg.label_smoothing:
        # Keras' sparse loss has no label smoothing; the dense one takes one-hot labels.
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
        y_fit = keras.utils.to_categorical(y, 10)
        metric = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        # from_logits=True: the model ends in raw logits (softmax is folded into the loss, which
        # is numerically safer) -- the same convention as torch's CrossEntropyLoss.
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        y_fit, metric = y, keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    # compile() only records what fit() will use; fit() then builds one train step -- forward
    # pass with training=True (batch statistics in batch norm, augmentation on), loss,
    # GradientTape gradients, optimizer.apply_gradients -- and runs it as a tf.function.
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, weight_decay=cfg.weight_decay or None),
        loss=loss, metrics=[metric],
    )
    with tf.device(device):
        # shuffle=True: a new permutation of the in-memory arrays every epoch.
        trainer.fit(x, y_fit, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True,
                    verbose=0, callbacks=[_Loop(model, cfg, log, xv, yv)])
    return {"tensorflow_version": tf.__version__, "keras_version": keras.__version__}


def save(model: keras.Model, run_dir: Path) -> str:
    # The inference model was never compiled, so the file holds architecture + weights only:
    # what Keras users load. mnistopt itself reads weights.npz (train/weights.py).
    model.save(run_dir / "model.keras")
    return "model.keras"


def weights(model: keras.Model) -> dict[str, np.ndarray]:
    # By position: layer names carry a per-process counter (conv2d_3), positions do not.
    return {f"layers.{i}.{j}": w for i, layer in enumerate(model.layers)
            for j, w in enumerate(layer.get_weights())}


def set_weights(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    for i, layer in enumerate(model.layers):
        n = len(layer.weights)
        if n:
            layer.set_weights([arrays[f"layers.{i}.{j}"] for j in range(n)])


# A .keras file is a zip; only its weights member is read, never its config.json.
WEIGHTS_MEMBER = "model.weights.h5"
MAX_WEIGHTS_BYTES = 256 << 20


def load(run_dir: Path, arch: A.Arch) -> keras.Model:
    """A run written before weights.npz: the arch rebuilt, the weights read by position from
    the model.weights.h5 inside model.keras (Keras' own weights-only format)."""
    import shutil
    import tempfile
    import zipfile

    path = run_dir / "model.keras"
    model = build(arch)
    try:
        with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
            info = zf.getinfo(WEIGHTS_MEMBER)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) \
                    or info.file_size > MAX_WEIGHTS_BYTES:
                raise ValueError(f"{WEIGHTS_MEMBER} is {info.file_size:,} bytes or oddly compressed")
            h5 = Path(tmp) / "w.weights.h5"
            with zf.open(info) as src, open(h5, "wb") as dst:  # zipfile stops at file_size
                shutil.copyfileobj(src, dst)
            model.load_weights(h5)
    except Exception as exc:  # not a zip, no weights member, weights of another arch, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise RunError(f"{path}: cannot read its weights as '{arch.name}' ({first})") from None
    return model


def logits(model: keras.Model, x01: np.ndarray) -> np.ndarray:
    # Calling the model (training=False by default) instead of predict(): no per-call
    # data-adapter set-up, and the same path the exporters trace.
    return model(tf.convert_to_tensor(x01), training=False).numpy().astype(np.float32)
