"""Image files into MNIST's 28x28 form: photos, modes, thin strokes, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from mnistopt.errors import InputError


def _shift_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation of two 28x28 digits over shifts of up to 1 pixel."""
    best = -1.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            s = np.roll(np.roll(a.astype(float), dy, 0), dx, 1)
            best = max(best, float(np.corrcoef(s.ravel(), b.astype(float).ravel())[0, 1]))
    return best


def _photo(digit: np.ndarray, rng, size=(400, 500)) -> np.ndarray:
    """An MNIST digit as if photographed: dark ink on lit paper, uneven light, noise."""
    from PIL import Image

    ink = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC),
                     np.float32) / 255
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 0.7 + 0.25 * xx / w + 0.05 * yy / h
    page = paper.copy()
    page[60:340, 110:390] *= 1 - 0.85 * ink
    return np.clip(page + rng.normal(0, 0.03, page.shape), 0, 1)


def test_photo_of_a_digit_becomes_mnist(mnist, tmp_path):
    from PIL import Image

    from mnistopt.runtime.preprocess import load_image

    rng = np.random.default_rng(0)
    for i in range(10):
        digit = mnist.x_test[i]
        path = tmp_path / f"photo{i}.jpg"
        Image.fromarray((_photo(digit, rng) * 255).astype(np.uint8)).save(path, quality=90)
        got = load_image(path)
        assert got.dtype == np.uint8 and got.shape == (28, 28)
        assert got.max() == 255 and np.percentile(got, 50) == 0  # white ink on black
        assert _shift_corr(got, digit) > 0.75, i
        ys, xs = np.nonzero(got > 30)
        assert max(np.ptp(ys), np.ptp(xs)) <= 21  # fits the 20x20 box (anti-aliasing: +1)
        cy, cx = (np.array(np.nonzero(got)) * got[got > 0]).sum(1) / got.sum()
        assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1  # centred by mass


def test_image_modes_and_thin_strokes(tmp_path):
    from PIL import Image, ImageDraw

    from mnistopt.runtime.preprocess import load_image, load_images

    # A thin black "1" drawn on a transparent canvas (a drawing app's export).
    im = Image.new("RGBA", (600, 600), (0, 0, 0, 0))
    ImageDraw.Draw(im).line([(300, 80), (300, 520)], fill=(0, 0, 0, 255), width=6)
    im.save(tmp_path / "one.png")
    got = load_image(tmp_path / "one.png")
    assert (got > 128).sum(1).max() >= 2  # thickened to an MNIST-like stroke
    assert 8 <= np.nonzero(got)[1].mean() <= 19 and np.ptp(np.nonzero(got)[0]) >= 18
    # White ink on black (already MNIST polarity), 16-bit grayscale, palette: all accepted.
    dark = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(dark).ellipse([16, 10, 48, 54], outline=255, width=5)
    dark.save(tmp_path / "zero.png")
    dark.convert("I;16").save(tmp_path / "zero16.png")
    dark.convert("P").save(tmp_path / "zerop.png")
    a = load_images([tmp_path / "zero.png", tmp_path / "zero16.png", tmp_path / "zerop.png"])
    assert a.shape == (3, 28, 28) and a[:, 14, 14].max() < 50 and a.max() == 255


@pytest.mark.parametrize("content, match", [
    (b"not an image at all", "not a readable image"),
    (None, "no such image file"),
])
def test_bad_image_files(tmp_path, content, match):
    from mnistopt.runtime.preprocess import load_image

    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_image(path)


def test_blank_image_and_bad_npy(tmp_path):
    from PIL import Image

    from mnistopt.runtime.preprocess import load_image, load_images

    Image.new("L", (50, 50), 200).save(tmp_path / "blank.png")
    with pytest.raises(InputError, match="no visible digit"):
        load_image(tmp_path / "blank.png")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(InputError, match="wrong.npy.*shape"):
        load_images([tmp_path / "wrong.npy"])
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.npy"):
        load_images([tmp_path / "junk.npy"])
