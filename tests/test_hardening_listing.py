"""Issue 10 items 4 and 5: listing a source never crashes and loses nothing. Link loops, links to
folders (`sub -> .`), dangling links, FIFOs, sockets and unreadable folders become rejects with a
reason; recursion enters each folder once; a clean file without its rainy twin is `missing_rainy`;
the funnel accounts for every file found."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.ingest.adapters.base import image_files
from tasks.imageio import ImageRejected, read_file_bytes
from tasks.ingest.stage import list_source
from tasks.ingest.sources import SourceSpec

ROOT = Path(__file__).resolve().parents[1]


def png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)


def odd_entries(folder: Path, sockets: list) -> dict[str, str]:
    """Every odd kind of entry in `folder`; returns name -> the reject reason ingest must give."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    (folder / "sub").symlink_to(".")  # a link back to its own folder
    os.mkfifo(folder / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    sockets.append(sock)
    return {"dangling.png": "unreadable", "loop_a.png": "unreadable", "loop_b.png": "unreadable",
            "sub": "not_a_file", "fifo.png": "not_a_file", "sock.png": "not_a_file"}


@pytest.fixture
def sockets():
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def test_read_file_bytes_names_the_reason(tmp_path, sockets):
    expected = odd_entries(tmp_path, sockets)
    details = {}
    for name, reason in expected.items():
        with pytest.raises(ImageRejected) as err:
            read_file_bytes(tmp_path / name)  # a FIFO must not block
        assert err.value.reason == reason, name
        details[name] = err.value.detail
    assert "dangling" in details["dangling.png"] and "loop" in details["loop_a.png"]
    assert "FIFO" in details["fifo.png"] and "socket" in details["sock.png"] and "folder" in details["sub"]
    png(tmp_path / "ok.png", 0)
    (tmp_path / "link.png").symlink_to(tmp_path / "ok.png")
    assert read_file_bytes(tmp_path / "link.png") == (tmp_path / "ok.png").read_bytes()


def test_recursive_listing_enters_each_folder_once(tmp_path, sockets):
    gallery = tmp_path / "gallery"
    png(gallery / "a.png", 1)
    png(gallery / "deep" / "b.png", 2)
    odd_entries(gallery / "deep", sockets)
    (gallery / "deep" / "up").symlink_to("..")  # a loop two levels long
    (gallery / "alias").symlink_to("deep")  # a second way into a folder
    (gallery / "other_real").mkdir()
    png(gallery / "other_real" / "c.png", 3)
    (gallery / "z_link_to_real").symlink_to("other_real")
    found = [p.relative_to(gallery).as_posix() for p in image_files(gallery, recursive=True)]
    assert found == sorted(found)
    assert found == sorted(["a.png", "alias", "deep/b.png", "deep/dangling.png", "deep/fifo.png", "deep/loop_a.png",
                            "deep/loop_b.png", "deep/sock.png", "deep/sub", "deep/up", "other_real/c.png",
                            "z_link_to_real"])


def test_an_unreadable_folder_is_listed_not_fatal(tmp_path, monkeypatch):
    """Simulated (the tests may run as root, which reads every folder)."""
    import tasks.ingest.adapters.base as base

    png(tmp_path / "g" / "a.png", 1)
    png(tmp_path / "g" / "locked" / "b.png", 2)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(base.os, "scandir", scandir)
    assert [p.name for p in image_files(tmp_path / "g", recursive=True)] == ["a.png", "locked"]
    assert image_files(tmp_path / "g" / "locked") == [tmp_path / "g" / "locked"]


def test_source_listing_keeps_every_entry_and_missing_rainy(tmp_path, sockets):
    src = tmp_path / "src"
    png(src / "drs" / "input" / "a.png", 1)
    png(src / "drs" / "target" / "a.png", 2)
    png(src / "drs" / "target" / "only_target.png", 3)
    odd_entries(src / "drs" / "input", sockets)
    listings = list_source(SourceSpec("unirain", "unirain", None, src))
    rainy = sorted(p.rainy_path.name for p in listings if p.rainy_path is not None)
    assert rainy == ["a.png", "dangling.png", "fifo.png", "loop_a.png", "loop_b.png", "sock.png", "sub"]
    assert [p.clean_path.name for p in listings if p.rainy_path is None] == ["only_target.png"]


INGEST = "import sys; from flows.cli import main; sys.exit(main())"


def test_ingest_accounts_for_every_file_found(tmp_path, sockets):
    """The CLI on a source and a gallery full of odd entries: exit 0, and every entry is a candidate,
    a gallery image or exactly one reject with the expected reason."""
    import pandas as pd

    src, gallery, run = tmp_path / "src", tmp_path / "gallery", tmp_path / "run"
    for i in range(3):
        png(src / "drs" / "input" / f"p{i}.png", i)
        png(src / "drs" / "target" / f"p{i}.png", 10 + i)
    png(src / "drs" / "target" / "only_target.png", 20)
    bad_pairs = odd_entries(src / "drs" / "input", sockets)
    png(gallery / "g0.png", 30)
    png(gallery / "nested" / "g1.png", 31)
    bad_gallery = {f"nested/{k}": v for k, v in odd_entries(gallery / "nested", sockets).items()}

    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
    res = subprocess.run([sys.executable, "-c", INGEST, "ingest", "--run", str(run), "--source", f"unirain={src}",
                          "--gallery", str(gallery)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr

    candidates = pd.read_parquet(run / "manifests" / "candidates")
    images = pd.read_parquet(run / "manifests" / "gallery")
    rejects = pd.read_parquet(run / "manifests" / "rejects")
    assert len(candidates) == 3 and len(images) == 2
    by_path = {Path(p).name if "gallery" not in str(p) else str(Path(p).relative_to(gallery)): r
               for p, r in zip(rejects["path"], rejects["reason"])}
    expected = {**bad_pairs, "only_target.png": "missing_rainy", **bad_gallery}
    assert by_path == expected
    assert len(rejects) == len(expected)  # exactly one reject each
    # every entry on disk is accounted for: the source's rainy entries and its lone target, the
    # gallery's entries at any depth (folders themselves are not entries)
    source_entries = list((src / "drs" / "input").iterdir()) + [src / "drs" / "target" / "only_target.png"]
    gallery_entries = [gallery / "g0.png", *(gallery / "nested").iterdir()]
    assert len(candidates) + len(images) + len(rejects) == len(source_entries) + len(gallery_entries) == 18


def test_later_readers_never_block_on_a_fifo(tmp_path):
    """A manifest path that became a FIFO after ingest: the judges and every stage's loader reject it."""
    from tasks.imageio import load_rgb
    from tasks.vote.judges.vllm_backend import image_data_url

    os.mkfifo(tmp_path / "was_an_image.png")
    for read in (image_data_url, load_rgb):
        with pytest.raises(ImageRejected) as err:
            read(tmp_path / "was_an_image.png")
        assert err.value.reason == "not_a_file" and "FIFO" in err.value.detail


@pytest.mark.parametrize("spec, expected", [
    ("unirain={root}/drs", "no dataset layout found; expected drs|drd|nrs|nrd/{{input,target}}/NAME; "
                           "{root}/drs holds input/ itself: give its parent"),
    ("paired={root}/drs/input", "expected a rainy folder (input|rainy|rain|data) beside a clean folder"),
])
def test_a_root_holding_no_layout_is_refused_before_work(tmp_path, spec, expected):
    """Part of issue 10 item 6: the adapter's own message, exit 2, no Prefect traceback."""
    png(tmp_path / "drs" / "input" / "a.png", 1)
    png(tmp_path / "drs" / "target" / "a.png", 2)
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    res = subprocess.run([sys.executable, "-c", INGEST, "ingest", "--run", str(tmp_path / "run"), "--source",
                          spec.format(root=tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert expected.format(root=tmp_path) in res.stderr and "Traceback" not in res.stderr
