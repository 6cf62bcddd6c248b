
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_manifests import (ManifestError, clean_temporaries, get_schema, pair_id, read_manifest, shard_complete,
                            shard_files, shard_of, write_shard)
from data_manifests import writer as writer_mod
from data_manifests.ids import bytes_digest


def candidate_rows(n, source="s"):
    rows = []
    for i in range(n):
        r, c = bytes_digest(b"r%d" % i), bytes_digest(b"c%d" % i)
        rows.append({"pair_id": pair_id(r, c), "source": source, "rain_type": "day_streak", "rainy_path": f"/r/{i}.png",
                     "clean_path": f"/c/{i}.png", "width": 64, "height": 80, "rainy_id": r, "clean_id": c,
                     "rain_type_inferred": False})
    return rows


def test_ids_are_content_hashes_and_stable():
    assert bytes_digest(b"abc") == bytes_digest(b"abc") != bytes_digest(b"abd")
    assert len(bytes_digest(b"")) == 32
    a, b = bytes_digest(b"a"), bytes_digest(b"b")
    assert pair_id(a, b) != pair_id(b, a)  # which file is rainy matters
    # a fixed value guards against accidental changes of the id scheme across versions
    assert bytes_digest(b"unirain") == "4334d2306442c441aca34db72656144f"
    assert {shard_of(bytes_digest(bytes([i])), 7) for i in range(200)} == set(range(7))


def test_write_read_round_trip_with_version_metadata(tmp_path):
    schema = get_schema("candidates")
    rows = candidate_rows(10)
    write_shard(rows[:6], tmp_path, "part-00000.parquet", schema)
    write_shard(rows[6:], tmp_path, "part-00001.parquet", schema)
    meta = pq.read_schema(tmp_path / "part-00000.parquet").metadata
    assert meta[b"unirain.manifest"] == b"candidates" and meta[b"unirain.schema_version"] == str(schema.version).encode()
    frame = read_manifest(tmp_path, "candidates")
    assert sorted(frame["pair_id"]) == sorted(r["pair_id"] for r in rows)
    assert list(frame.columns) == schema.columns
    # other readers see the folder as one dataset too
    assert len(pd.read_parquet(tmp_path)) == 10


def test_rows_are_sorted_so_rewrites_are_byte_identical(tmp_path):
    schema = get_schema("candidates")
    rows = candidate_rows(20)
    write_shard(rows, tmp_path / "a", "p.parquet", schema)
    write_shard(list(reversed(rows)), tmp_path / "b", "p.parquet", schema)
    assert (tmp_path / "a/p.parquet").read_bytes() == (tmp_path / "b/p.parquet").read_bytes()


def test_validation_names_the_problem(tmp_path):
    schema = get_schema("candidates")
    bad = candidate_rows(2)
    del bad[0]["width"], bad[1]["width"]
    with pytest.raises(ManifestError, match="width"):
        write_shard(bad, tmp_path, "p.parquet", schema)
    bad = candidate_rows(1)
    bad[0]["rain_type"] = "sandstorm"
    with pytest.raises(ManifestError, match="sandstorm"):
        write_shard(bad, tmp_path, "p.parquet", schema)
    rej = [{"item_id": "x", "stage": "ingest", "reason": "because", "detail": "", "source": None, "path": None}]
    with pytest.raises(ManifestError, match="vocabulary"):
        write_shard(rej, tmp_path, "r.parquet", get_schema("rejects"))
    assert not list(tmp_path.iterdir())


def test_unknown_version_is_refused(tmp_path):
    schema = get_schema("candidates")
    table = pa.Table.from_pylist(candidate_rows(2)).cast(schema.schema)
    pq.write_table(table.replace_schema_metadata({b"unirain.manifest": b"candidates", b"unirain.schema_version": b"99"}),
                   tmp_path / "part-00000.parquet")
    with pytest.raises(ManifestError, match="version 99"):
        read_manifest(tmp_path, "candidates")
    assert not shard_complete(tmp_path / "part-00000.parquet", schema)


def test_crash_between_write_and_rename_leaves_no_shard(tmp_path, monkeypatch):
    schema = get_schema("candidates")

    def crash(src, dst):
        raise KeyboardInterrupt("killed before rename")

    monkeypatch.setattr(writer_mod.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_shard(candidate_rows(3), tmp_path, "part-00000.parquet", schema)
    monkeypatch.undo()
    assert not shard_complete(tmp_path / "part-00000.parquet", schema)
    assert shard_files(tmp_path) == []
    # a hard kill leaves the temporary file: readers ignore it and the stage cleans it up
    (tmp_path / ".part-00000.parquet.123.abcd.tmp").write_bytes(b"PAR1 half a file")
    assert read_manifest(tmp_path, "candidates").empty
    assert clean_temporaries(tmp_path) == 1


def test_truncated_shard_is_not_complete(tmp_path):
    schema = get_schema("candidates")
    path = write_shard(candidate_rows(50), tmp_path, "part-00000.parquet", schema)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not shard_complete(path, schema)


def test_empty_manifest_reads_with_columns(tmp_path):
    frame = read_manifest(tmp_path / "missing", "rejects")
    assert frame.empty and list(frame.columns) == get_schema("rejects").columns
