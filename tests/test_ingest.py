import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_manifests import RunLayout, read_manifest
from tasks.ingest import stage as ing
from tasks.config import IngestConfig
from tasks.imageio import ImageRejected, load_rgb, probe_image_bytes
from tasks.ingest.sources import parse_source

RNG = np.random.default_rng(0)


def rgb(h=80, w=96, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def save(path: Path, arr=None, fmt=None, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb() if arr is None else arr)
    if mode:
        img = img.convert(mode)
    img.save(path, format=fmt, **kw)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side=40000) -> bytes:
    """A small file whose header claims side x side pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def sixteen_bit_png(path: Path):
    arr = (np.random.default_rng(1).random((80, 96)) * 65535).astype(np.uint16)
    Image.fromarray(arr).save(path)  # mode I;16
    return path


def encoded(arr, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("make,reason", [
    (lambda: b"", "unreadable"),
    (lambda: encoded(rgb(), "PNG")[:-300], "unreadable"),
    (lambda: encoded(rgb(), "JPEG")[:-400], "unreadable"),
    (lambda: b"this is a text file, not a PNG\n" * 20, "unreadable"),
    (lambda: encoded(rgb(), "GIF"), "unsupported_format"),
    (lambda: encoded(rgb(40, 200), "PNG"), "too_small"),
    (lambda: bomb_png(), "decompression_bomb"),
])
def test_bad_bytes_are_rejected_with_a_reason(make, reason):
    with pytest.raises(ImageRejected) as info:
        probe_image_bytes(make())
    assert info.value.reason == reason


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_odd_modes_are_accepted_and_loaded_as_rgb(tmp_path, mode):
    if mode == "I;16":
        path = sixteen_bit_png(tmp_path / "x.png")
    else:
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        path = save(tmp_path / f"x.{fmt.lower()}", mode=mode, fmt=fmt)
    info = probe_image_bytes(path.read_bytes())
    assert (info.width, info.height) == (96, 80)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (96, 80)
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.std() > 10  # converted, not blanked


def build_dataset(root: Path) -> dict:
    """The paper layout with one of every bad input; returns expected reasons by file name."""
    good = {}
    for i, folder in enumerate(["drs", "drd", "nrs", "nrd"]):
        a = rgb(seed=i + 10)
        save(root / folder / "input" / f"ok{i}.png", a)
        save(root / folder / "target" / f"ok{i}.png", a // 2)
        good[f"ok{i}"] = folder
    inp, tgt = root / "drs" / "input", root / "drs" / "target"
    # the same pair under another name: a duplicate
    save(inp / "ok0_copy.png", rgb(seed=10)); save(tgt / "ok0_copy.png", rgb(seed=10) // 2)
    (inp / "empty.png").write_bytes(b""); save(tgt / "empty.png")
    (inp / "trunc.png").write_bytes(encoded(rgb(), "PNG")[:-200]); save(tgt / "trunc.png")
    (inp / "trunc.jpg").write_bytes(encoded(rgb(), "JPEG")[:-300]); save(tgt / "trunc.jpg", fmt="JPEG")
    (inp / "text.png").write_text("not an image\n" * 10); save(tgt / "text.png")
    (inp / "anim.gif").write_bytes(encoded(rgb(), "GIF")); save(tgt / "anim.gif", fmt="GIF")
    save(inp / "tiny.png", rgb(32, 32)); save(tgt / "tiny.png", rgb(32, 32))
    (inp / "bomb.png").write_bytes(bomb_png()); save(tgt / "bomb.png")
    save(inp / "mismatch.png", rgb(80, 96)); save(tgt / "mismatch.png", rgb(96, 80))
    save(inp / "orphan.png", rgb(seed=99))
    sixteen_bit_png(inp / "deep.png"); save(tgt / "deep.png")
    save(inp / "gray.png", mode="L"); save(tgt / "gray.png", rgb(seed=5))
    save(inp / "rgba.png", rgb(seed=6), mode="RGBA"); save(tgt / "rgba.png", rgb(seed=7))
    save(inp / "cmyk.jpg", rgb(seed=8), mode="CMYK", fmt="JPEG"); save(tgt / "cmyk.jpg", rgb(seed=9), fmt="JPEG")
    return good


EXPECTED_REJECTS = {
    "ok0_copy.png": "duplicate", "empty.png": "unreadable", "trunc.png": "unreadable", "trunc.jpg": "unreadable",
    "text.png": "unreadable", "anim.gif": "unsupported_format", "tiny.png": "too_small",
    "bomb.png": "decompression_bomb", "mismatch.png": "size_mismatch", "orphan.png": "missing_clean",
}
ACCEPTED_ODD = {"deep.png", "gray.png", "rgba.png", "cmyk.jpg"}


def run_pure_ingest(root: Path):
    cfg = IngestConfig()
    spec = parse_source(f"unirain={root}")
    rows, rejects = ing.probe_pairs(spec.name, ing.list_source(spec), cfg)
    rows = ing.drop_duplicates(rows, "pair_id", rejects, "pair")
    return rows, rejects


def test_every_bad_input_becomes_exactly_one_reject(tmp_path):
    good = build_dataset(tmp_path / "ds")
    rows, rejects = run_pure_ingest(tmp_path / "ds")
    reasons = {Path(r["path"]).name: r["reason"] for r in rejects}
    assert reasons == EXPECTED_REJECTS
    kept = {Path(r["rainy_path"]).name for r in rows}
    assert kept == {f"{k}.png" for k in good} | ACCEPTED_ODD
    types = {Path(r["rainy_path"]).stem: r["rain_type"] for r in rows}
    assert types["ok1"] == "day_drop" and types["ok2"] == "night_streak" and types["ok3"] == "night_drop"
    # nothing lost: every listed rainy file is kept or rejected
    listed = {p.name for p in (tmp_path / "ds").glob("*/input/*")}
    assert listed == kept | set(reasons)


def test_source_spec_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="nosuchset"):
        parse_source(f"nosuchset={tmp_path}")
    with pytest.raises(ValueError, match="folder not found"):
        parse_source(f"unirain={tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="sandstorm"):
        parse_source(f"paired:sandstorm={tmp_path}")
    (tmp_path / "input").mkdir(), (tmp_path / "target").mkdir()  # the layout `paired` expects (checked at parse)
    spec = parse_source(f"paired.city:night_drop={tmp_path}")
    assert (spec.name, spec.adapter, spec.rain_type) == ("paired.city", "paired", "night_drop")


def test_paired_adapter_infers_day_and_night(tmp_path):
    root = tmp_path / "p"
    bright = rgb(seed=1) // 2 + 120
    dark = rgb(seed=2) // 8
    save(root / "rainy" / "a_rain.png", bright); save(root / "norain" / "a_clean.png", bright)
    save(root / "rainy" / "b_rain.png", dark); save(root / "norain" / "b_clean.png", dark)
    spec = parse_source(f"paired={root}")
    rows, rejects = ing.probe_pairs(spec.name, ing.list_source(spec), IngestConfig())
    assert not rejects
    assert {Path(r["rainy_path"]).stem: r["rain_type"] for r in rows} == {"a_rain": "day_streak", "b_rain": "night_streak"}
    assert all(r["rain_type_inferred"] for r in rows)


def test_ingest_flow_writes_manifests_and_skips_when_done(tmp_path, prefect_harness, monkeypatch):
    from flows.stage import run_stage_flow
    from tasks.config import RunConfig
    from tasks.funnel import funnel_table

    def run_ingest(run, sources, gallery, cfg):
        report = run_stage_flow("ingest", run, RunConfig(sources=sources, gallery=gallery, ingest=cfg))
        return {k: report[k] for k in ("candidates", "gallery", "rejects")}

    build_dataset(tmp_path / "ds")
    gallery = tmp_path / "gallery"
    for i in range(3):
        save(gallery / "sub" / f"g{i}.jpg", rgb(seed=50 + i), fmt="JPEG")
    save(gallery / "g0_again.jpg", rgb(seed=50), fmt="JPEG")
    (gallery / "broken.png").write_bytes(b"")
    run = tmp_path / "run"
    counts = run_ingest(run, [f"unirain={tmp_path / 'ds'}"], [str(gallery)], IngestConfig(num_shards=4))
    assert counts == {"candidates": 8, "gallery": 3, "rejects": 12}
    layout = RunLayout.at(run)
    cands = read_manifest(layout.manifest("candidates"), "candidates")
    assert len(cands) == 8 and cands["pair_id"].is_unique
    # paths relative to the source's root, which run.json records
    assert not cands["rainy_path"].map(lambda p: Path(p).is_absolute()).any()
    assert layout.roots() == {"unirain": str((tmp_path / "ds").resolve()), "gallery": str(gallery.resolve())}
    absolute = layout.absolute_paths(cands, ("rainy_path", "clean_path"))
    assert absolute["rainy_path"].map(lambda p: Path(p).is_file()).all()
    assert len(list(layout.manifest("candidates").glob("part-*.parquet"))) == 4
    rejects = read_manifest(layout.rejects, "rejects")
    assert sorted(rejects["reason"].value_counts().items()) == sorted(
        {"duplicate": 2, "unreadable": 5, "unsupported_format": 1, "too_small": 1, "decompression_bomb": 1,
         "size_mismatch": 1, "missing_clean": 1}.items())
    funnel = funnel_table(layout)
    row = funnel[funnel["source"] == "unirain"].iloc[0]
    assert (row["kept"], row["rejected"]) == (8, 10)
    before = {p: p.stat().st_mtime_ns for p in layout.root.glob("manifests/*/*.parquet")}

    def no_probe(*a, **k):
        raise AssertionError("a finished ingest must not probe again")

    monkeypatch.setattr(ing, "probe_pairs", no_probe)
    assert run_ingest(run, [f"unirain={tmp_path / 'ds'}"], [str(gallery)], IngestConfig(num_shards=4)) == counts
    assert before == {p: p.stat().st_mtime_ns for p in layout.root.glob("manifests/*/*.parquet")}
