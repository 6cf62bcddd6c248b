"""Issue 10 item 9: EXIF orientation is applied on every image read, and probing (headers only)
reports the displayed size, width and height swapped for orientations 5-8."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from tasks.imageio import decode_rgb, load_rgb, probe_image_bytes

STORED = (96, 64)  # width x height as stored; a 64x96 portrait once the orientation is applied


def _stored_pixels() -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (STORED[1], STORED[0], 3), dtype=np.uint8)
    arr[:8, :8] = 255  # a corner marker: rotation and mirroring move it
    return Image.fromarray(arr)


def _encode(orientation: int, fmt: str) -> bytes:
    img = _stored_pixels()
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    img.save(buf, format=fmt, exif=exif.tobytes(), **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_probe_and_decode_follow_the_orientation(fmt, orientation):
    data = _encode(orientation, fmt)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    info = probe_image_bytes(data, min_side=32)
    assert info.orientation == orientation
    assert (info.width, info.height) == expected.size == (STORED if orientation <= 4 else STORED[::-1])
    decoded = decode_rgb(data)
    assert decoded.size == (info.width, info.height)
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))


def _exif_after_pixels(orientation: int) -> bytes:
    """A PNG whose eXIf chunk follows IDAT (allowed by readers; Pillow writes it before)."""
    import struct
    import zlib

    plain = io.BytesIO()
    _stored_pixels().save(plain, format="PNG")
    data = plain.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


@pytest.mark.parametrize("make", [lambda: _encode(6, "PNG"), lambda: _exif_after_pixels(6)], ids=["before", "after"])
def test_probing_decodes_no_pixels(monkeypatch, make):
    """The header is enough: a PNG probes to its rotated size without decoding its pixels, whether
    its eXIf chunk comes before or after the pixel data."""
    data = make()
    assert decode_rgb(data).size == (64, 96)
    calls = []
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self) or None)
    info = probe_image_bytes(data, min_side=32)
    assert (info.width, info.height) == (64, 96) and calls == []


def test_a_portrait_photo_is_portrait_everywhere(tmp_path):
    """load_rgb (every stage), the model library's reader (train, evaluate, derain) and derain itself."""
    import torch
    from torch import nn

    from unirain_model.data import load_rgb as model_load_rgb
    from unirain_model.inference import derain_file

    src = tmp_path / "portrait.jpg"
    src.write_bytes(_encode(6, "JPEG"))
    assert load_rgb(src).size == (64, 96)
    assert model_load_rgb(src).shape == (96, 64, 3)

    class Identity(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x

    out = derain_file(Identity(), src, tmp_path / "out.png", tile=None)
    assert Image.open(out).size == (64, 96)


def test_ingest_probe_size_is_the_displayed_size(tmp_path):
    """A rotated rainy image and its upright clean twin have the same size at ingest (no size_mismatch)."""
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(_encode(8, "JPEG")))).convert("RGB")
    buf = io.BytesIO()
    upright.save(buf, format="PNG")
    assert (probe_image_bytes(_encode(8, "JPEG"), 32).width, probe_image_bytes(_encode(8, "JPEG"), 32).height) == \
        (probe_image_bytes(buf.getvalue(), 32).width, probe_image_bytes(buf.getvalue(), 32).height)


def test_damaged_exif_keeps_the_image():
    data = bytearray(_encode(6, "JPEG"))
    start = data.find(b"Exif\x00\x00")
    data[start + 6:start + 14] = b"\xff" * 8  # the TIFF header of the EXIF block
    info = probe_image_bytes(bytes(data), min_side=32)
    assert info.orientation == 1 and (info.width, info.height) == STORED
    assert decode_rgb(bytes(data)).size == STORED
