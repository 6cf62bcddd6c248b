"""The all-weather adapters (issue 14) on small trees in their public layouts: Snow100K, Outdoor-Rain,
RESIDE, TransWeather's All-Weather list files, and the project's own layout with snow/ and fog/."""
from __future__ import annotations


import pytest

from tasks.ingest.adapters import ADAPTERS, get_adapter
from tasks.ingest.sources import parse_source
from tests.test_adapters import listed, make, relative


def test_all_weather_adapters_are_registered():
    assert {"snow100k", "outdoorrain", "reside", "allweather"} <= set(ADAPTERS)


def test_snow100k_train_and_size_test_sets(tmp_path):
    make(tmp_path, "train/synthetic/beach_1.jpg", "train/gt/beach_1.jpg", "train/mask/beach_1.jpg",
         "test/Snow100K-L/synthetic/city_2.jpg", "test/Snow100K-L/gt/city_2.jpg",
         "test/Snow100K-S/synthetic/park_3.jpg", "test/Snow100K-S/gt/park_4.jpg")
    assert listed("snow100k", tmp_path) == [
        ("test/Snow100K-L/synthetic/city_2.jpg", "test/Snow100K-L/gt/city_2.jpg", "snow"),
        ("test/Snow100K-S/synthetic/park_3.jpg", None, "snow"),
        (None, "test/Snow100K-S/gt/park_4.jpg", "snow"),
        ("train/synthetic/beach_1.jpg", "train/gt/beach_1.jpg", "snow"),
    ]
    # WeatherDiffusion's copy: snow100k/train/{input,gt}; a root at one size set works too
    make(tmp_path / "wd", "train/input/a.png", "train/gt/a.png")
    assert listed("snow100k", tmp_path / "wd") == [("train/input/a.png", "train/gt/a.png", "snow")]
    assert listed("snow100k", tmp_path / "test" / "Snow100K-L") == [("synthetic/city_2.jpg", "gt/city_2.jpg", "snow")]
    with pytest.raises(ValueError, match="synthetic/NAME beside gt/NAME"):
        list(get_adapter("snow100k").list_pairs(tmp_path / "train" / "mask"))


def test_outdoor_rain_many_inputs_per_scene_and_test1_names(tmp_path):
    make(tmp_path, "train/input/im_0001_s80_a04.png", "train/input/im_0001_s95_a06.png", "train/gt/im_0001.png",
         "train/input/im_0002_s80_a05.png", "train/gt/im_0003.png",
         "test1/input/im_0301_s80_a04.png", "test1/gt/im_0301_s80_a04.png")
    assert listed("outdoorrain", tmp_path) == [
        ("test1/input/im_0301_s80_a04.png", "test1/gt/im_0301_s80_a04.png", "fog"),
        ("train/input/im_0001_s80_a04.png", "train/gt/im_0001.png", "fog"),
        ("train/input/im_0001_s95_a06.png", "train/gt/im_0001.png", "fog"),
        ("train/input/im_0002_s80_a05.png", None, "fog"),
        (None, "train/gt/im_0003.png", "fog"),
    ]
    assert {t for *_, t in listed("outdoorrain", tmp_path, "day_streak")} == {"day_streak"}


def test_reside_ots_sots_many_hazy_per_clear(tmp_path):
    make(tmp_path, "OTS/hazy/0025_0.8_0.1.jpg", "OTS/hazy/0025_1_0.2.jpg", "OTS/clear/0025.jpg",
         "SOTS/outdoor/hazy/0001_0.8_0.2.jpg", "SOTS/outdoor/clear/0001.png", "SOTS/outdoor/hazy/0002_0.9_0.2.jpg")
    assert listed("reside", tmp_path) == [
        ("OTS/hazy/0025_0.8_0.1.jpg", "OTS/clear/0025.jpg", "fog"),
        ("OTS/hazy/0025_1_0.2.jpg", "OTS/clear/0025.jpg", "fog"),
        ("SOTS/outdoor/hazy/0001_0.8_0.2.jpg", "SOTS/outdoor/clear/0001.png", "fog"),
        ("SOTS/outdoor/hazy/0002_0.9_0.2.jpg", None, "fog"),
    ]
    with pytest.raises(ValueError, match="hazy/ID_A_BETA.ext beside clear/ID.ext"):
        list(get_adapter("reside").list_pairs(tmp_path / "OTS" / "hazy"))


def test_allweather_list_files_type_each_line(tmp_path):
    make(tmp_path, "allweather/input/im_0001_s80_a04.png", "allweather/gt/im_0001_s80_a04.png",
         "allweather/input/12_rain.png", "allweather/gt/12_rain.png",
         "allweather/input/beautiful_smile_00001.jpg",  # its gt is missing
         "snow/input/city_1.jpg", "snow/gt/city_1.jpg")
    (tmp_path / "allweather.txt").write_text(
        "allweather/input/im_0001_s80_a04.png\n/allweather/input/12_rain.png\n\nallweather/input/beautiful_smile_00001.jpg\n")
    (tmp_path / "snowtest100k_L.txt").write_text("snow/input/city_1.jpg\n")
    assert listed("allweather", tmp_path) == [
        ("allweather/input/im_0001_s80_a04.png", "allweather/gt/im_0001_s80_a04.png", "fog"),
        ("allweather/input/12_rain.png", "allweather/gt/12_rain.png", "day_drop"),
        ("allweather/input/beautiful_smile_00001.jpg", None, "snow"),
        ("snow/input/city_1.jpg", "snow/gt/city_1.jpg", "snow"),
    ]
    # lines relative to the list's parent (TransWeather joins data/train/ + the line)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "allweather.txt").write_text("allweather/input/12_rain.png\n")
    assert relative(get_adapter("allweather").list_pairs(lists), tmp_path) == [
        ("allweather/input/12_rain.png", "allweather/gt/12_rain.png", "day_drop")]
    (lists / "bad.txt").write_text("gt/only.png\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected an input image path"):
        list(get_adapter("allweather").list_pairs(lists))
    with pytest.raises(ValueError, match="expected a list file"):
        list(get_adapter("allweather").list_pairs(tmp_path / "snow"))


def test_unirain_layout_holds_snow_and_fog_folders(tmp_path):
    make(tmp_path, "drs/input/a.png", "drs/target/a.png", "snow/input/s.png", "snow/target/s.png",
         "fog/input/f.png", "fog/target/f.png")
    assert listed("unirain", tmp_path) == [("drs/input/a.png", "drs/target/a.png", "day_streak"),
                                           ("snow/input/s.png", "snow/target/s.png", "snow"),
                                           ("fog/input/f.png", "fog/target/f.png", "fog")]
    make(tmp_path / "only_snow", "snow/input/s.png", "snow/target/s.png")
    assert [t for *_, t in listed("unirain", tmp_path / "only_snow")] == ["snow"]


def test_source_specs_take_weather_types(tmp_path):
    make(tmp_path, "input/1.png", "target/1.png")
    assert parse_source(f"paired:snow={tmp_path}").rain_type == "snow"
    with pytest.raises(ValueError, match="unknown rain type 'sandstorm'; expected one of .*snow, fog"):
        parse_source(f"paired:sandstorm={tmp_path}")
