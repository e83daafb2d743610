"""Image files -> MNIST-style 28x28 uint8 digits (white ink on black, centred by mass).

MNIST's own recipe (LeCun et al.): the digit is size-normalised into a 20x20 box keeping its
aspect ratio (anti-aliased, hence grey levels), then placed in a 28x28 field so that its centre
of mass sits at the centre. A photo of a digit on paper needs more first: grayscale, invert
(paper is light, MNIST ink is bright), remove the paper's uneven background, crop to the ink,
and thicken thin pen strokes that would vanish when shrunk. numpy + Pillow (imported lazily).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError, require

BOX, SIZE = 20, 28
# Photos are reduced to this longest side first: plenty for a 20-pixel digit, and it bounds
# the cost of filtering a 12-megapixel picture.
WORK_SIDE = 256
# MNIST strokes are about 2-3 pixels wide in the 20-pixel box, i.e. ~12% of the digit's height.
STROKE_FRACTION = 0.12
THICKEN_SIDE = 64
# Larger than any camera's photo (a 48 MP phone shot is 8000x6000) and well below what would
# exhaust memory when decoded: an image over this is refused from its header, undecoded.
MAX_PIXELS = 64_000_000


def _pil():
    return require("PIL.Image", "images", "reading image files")


def open_image(path) -> np.ndarray:
    """Read an image file as float32 grayscale in [0, 1] (transparency composited on white)."""
    Image = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    too_big = (f"{path}: more than {MAX_PIXELS // 1_000_000} megapixels, far more than a "
               "photo of a digit needs; refusing to decode it")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP and raises from 179 MP; our own, lower limit comes first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise InputError(f"{too_big} ({im.size[0]}x{im.size[1]} pixels)")
            im = ImageOps.exif_transpose(im)  # phone photos are often stored rotated
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("L")
            if max(im.size) > WORK_SIDE:
                im.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
            return np.asarray(im, dtype=np.float32) / 255.0
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except Image.DecompressionBombError:
        raise InputError(too_big) from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image (PNG, JPEG, ...): "
                         "not an image, or its header is damaged") from None
    except (OSError, EOFError) as exc:
        if getattr(exc, "errno", None) is not None:
            raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
        if "truncated" in str(exc) or isinstance(exc, EOFError):
            raise InputError(f"{path}: the image data is truncated ({exc})") from None
        raise InputError(f"{path}: the image data is corrupt ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types on hostile bytes
        raise InputError(f"{path}: the image data is corrupt ({type(exc).__name__}: {exc})") from None


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Grayscale float [0, 1] (H, W), any polarity -> uint8 (28, 28) MNIST-style digit."""
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2:
        raise InputError(f"an image must be 2-D grayscale, got shape {g.shape}")
    if min(g.shape) < 2:
        raise InputError(f"{g.shape[1]}x{g.shape[0]} pixels is too small to hold a digit")
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > 0.5:  # light background: dark ink on paper
        g = 1.0 - g
    g = _flatten_background(g)
    lo, hi = np.percentile(g, 50), np.percentile(g, 99.5)
    if hi - lo < 0.08:
        raise InputError("no visible digit: the image is nearly uniform")
    g = np.clip((g - lo) / (hi - lo), 0.0, 1.0)
    g[g < 0.25] = 0.0  # paper grain and shadows left after levelling
    mask = g > 0.5
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InputError("no visible digit: no stroke stands out from the background")
    g = g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    g = _thicken(g)
    return _fit_and_centre(g)


def _flatten_background(g: np.ndarray) -> np.ndarray:
    """Subtract a smooth estimate of the background (uneven light and shadows on paper)."""
    if min(g.shape) < 32:
        return g
    Image = _pil()
    from PIL import ImageFilter

    im = Image.fromarray((g * 255).astype(np.uint8))
    # On a 32-pixel thumbnail a stroke is a few pixels wide: a 7-pixel min-filter removes the
    # ink, a blur smooths what is left, and scaling back up gives the background everywhere.
    small = im.resize((32, 32), Image.Resampling.BOX)
    bg = small.filter(ImageFilter.MinFilter(7)).filter(ImageFilter.GaussianBlur(2))
    bg = bg.resize(im.size, Image.Resampling.BILINEAR)
    return np.clip(g - np.asarray(bg, dtype=np.float32) / 255.0, 0.0, 1.0)


def _thicken(g: np.ndarray) -> np.ndarray:
    """Dilate strokes that are thin relative to the digit's size (a pen on a big photo).

    Works on the crop reduced to a 64-pixel long side (3x the final box: the filter stays
    small and cheap), padded so strokes can grow past the crop's edge.
    """
    Image = _pil()
    from PIL import ImageFilter

    h, w = g.shape
    im = Image.fromarray((g * 255).astype(np.uint8))
    if max(h, w) > THICKEN_SIDE:
        s = THICKEN_SIDE / max(h, w)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX)
    a = np.asarray(im, dtype=np.float32)
    a = a / a.max() if a.max() > 0 else a
    mask = a > 0.3
    area = int(mask.sum())
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    perimeter = max(1, area - int(inner.sum()))
    stroke = 2.0 * area / perimeter  # the width of a long thin shape
    want = STROKE_FRACTION * max(a.shape)
    k = int(round(want - stroke)) | 1
    if stroke >= want * 0.6 or k < 3:
        return a
    pad = k // 2 + 1
    im = Image.fromarray((np.pad(a, pad) * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(k))
    a = np.asarray(im, dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(axis=1) > 0.3), np.flatnonzero(a.max(axis=0) > 0.3)
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit_and_centre(g: np.ndarray) -> np.ndarray:
    """Scale the crop into the 20x20 box (aspect kept), centre its mass in 28x28."""
    Image = _pil()
    h, w = g.shape
    s = BOX / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    im = Image.fromarray((g * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS)
    small = np.asarray(im, dtype=np.float32)
    if small.max() > 0:  # anti-aliasing dims thin digits; MNIST's ink peaks at 255
        small *= 255.0 / small.max()
    total = small.sum()
    cy = (small.sum(axis=1) @ np.arange(nh)) / total if total else (nh - 1) / 2
    cx = (small.sum(axis=0) @ np.arange(nw)) / total if total else (nw - 1) / 2
    top = int(np.clip(round(SIZE / 2 - 0.5 - cy), 0, SIZE - nh))
    left = int(np.clip(round(SIZE / 2 - 0.5 - cx), 0, SIZE - nw))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top:top + nh, left:left + nw] = small
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_image(path) -> np.ndarray:
    """An image file -> uint8 (28, 28) MNIST-style digit."""
    gray = open_image(path)
    try:
        return to_mnist(gray)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_images(paths) -> np.ndarray:
    """Image files and/or .npy arrays -> uint8 or float (N, 28, 28), in the given order.

    A .npy holds images already in MNIST form: (28,28), (N,28,28), (N,28,28,1), (N,1,28,28).
    """
    from .classifier import images_array

    parts = []
    for p in paths:
        p = Path(p)
        if p.suffix.lower() == ".npy":
            try:
                # Memory-mapped first, so a header claiming more than the file holds fails
                # before any allocation; then copied into memory.
                arr = np.array(np.load(p, allow_pickle=False, mmap_mode="r"))
            except FileNotFoundError:
                raise InputError(f"{p}: no such file") from None
            except (OSError, ValueError) as exc:
                raise InputError(f"{p}: not a readable .npy array: {exc}") from None
            try:
                arr = images_array(arr)
            except InputError as exc:
                raise InputError(f"{p}: {exc}") from None
            parts.append(arr if arr.dtype == np.uint8 else
                         np.round(arr * 255).astype(np.uint8))
        else:
            parts.append(load_image(p)[None])
    if not parts:
        raise InputError("no images given")
    return np.concatenate(parts)
