"""Hostile and broken images, arrays and labels for `mnistopt predict`; each test builds its own."""

import json
import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

from mnistopt.errors import InputError

pytest.importorskip("PIL")

MB = 1 << 20


def png(width, height, rows) -> bytes:
    """A real grayscale PNG, 1 bit per pixel, from an iterable of raw scanlines (streamed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\0" + row) for row in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """20000 x 20000 pixels of valid PNG in ~60 KB: 400 MB once decoded to 8-bit gray."""
    row = bytes(20000 // 8)
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png(20000, 20000, (row for _ in range(20000))))
    return path


def test_decompression_bomb_is_refused_from_its_header(bomb):
    from mnistopt.runtime.preprocess import load_image

    assert bomb.stat().st_size < MB
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"bomb\.png: more than 64 megapixels.*refusing"):
            load_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, peak


def test_image_just_over_our_limit_is_refused_before_pillow_warns(tmp_path):
    from mnistopt.runtime.preprocess import MAX_PIXELS, load_image

    side = int(MAX_PIXELS ** 0.5) + 8  # 64 MP < this < Pillow's 89 MP warning
    row = bytes((side + 7) // 8)
    (tmp_path / "big.png").write_bytes(png(side, side, (row for _ in range(side))))
    with pytest.raises(InputError, match=rf"big\.png: .*\({side}x{side} pixels\)"):
        load_image(tmp_path / "big.png")


def image_file(tmp_path, kind):
    from PIL import Image

    path = tmp_path / f"{kind}.png"
    if kind == "1x1":
        Image.new("L", (1, 1), 0).save(path)
    elif kind == "blank":
        Image.new("L", (60, 40), 255).save(path)
    elif kind == "not-an-image":
        path.write_text("hello, I am text")
    elif kind == "truncated":
        im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8))
        im.save(path)
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "bad-header":
        path.write_bytes(png(0, 10, []))
    return path


@pytest.mark.parametrize("kind, says", [
    ("1x1", "1x1 pixels is too small to hold a digit"),
    ("blank", "no visible digit"),
    ("not-an-image", "not a readable image"),
    ("truncated", "truncated"),
    ("empty", "not a readable image"),
    ("directory", "is a directory"),
    ("bad-header", "header is damaged"),
])
def test_image_errors_name_the_file_and_say_what_is_wrong(tmp_path, kind, says):
    from mnistopt.runtime.preprocess import load_image

    path = image_file(tmp_path, kind)
    with pytest.raises(InputError) as info:
        load_image(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and says in msg, msg
    assert "\n" not in msg


def test_npy_whose_header_claims_more_than_the_file_holds(tmp_path):
    from mnistopt.runtime.preprocess import load_images

    header = repr({"descr": "|u1", "fortran_order": False, "shape": (10**7, 28, 28)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    path = tmp_path / "liar.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(784))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="liar.npy: not a readable .npy"):
            load_images([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, peak  # np.load without a memory map would reserve 7.8 GB here
    np.save(tmp_path / "objects.npy", np.array([{}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="objects.npy"):
        load_images([tmp_path / "objects.npy"])


# --- the command ----------------------------------------------------------------------------


def predict(*args):
    return subprocess.run([sys.executable, "-m", "mnistopt", "predict", *map(str, args)],
                          capture_output=True, text=True, timeout=180)


def test_cli_bomb_and_ansi_labels(tmp_path, bomb):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from hostile_models import onnx_model

    model = onnx_model(tmp_path / "m.onnx")
    r = predict(model, bomb)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bomb}: more than"), r.stderr
    # A sidecar whose labels carry terminal escapes (clear screen, red, a title change): the
    # schema refuses it, the warning says so on stderr, and nothing raw reaches stdout.
    evil = ["\x1b[2J\x1b[31mseven", "\x1b]0;owned\x07"] + [str(i) for i in range(2, 10)]
    (tmp_path / "m.onnx.json").write_text(json.dumps({"format": "onnx", "labels": evil}))
    np.save(tmp_path / "x.npy", np.zeros((4, 28, 28), np.uint8))
    for extra in ((), ("--top", "10"), ("--json",)):
        r = predict(model, tmp_path / "x.npy", *extra)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr
        assert f"warning: {tmp_path / 'm.onnx.json'}: sidecar ignored: metadata.labels" \
            in r.stderr, r.stderr


def test_predict_output_escapes_control_characters():
    from mnistopt.runtime.cli import _shown

    assert _shown("\x1b[31m7\x07") == "\\x1b[31m7\\x07"
    assert _shown("sieben ٧ 七") == "sieben ٧ 七"  # printable text in any script stays
