"""`unirain models make-tiny`: files saved by the libraries' savers, loaded back offline through the
same factories as real checkpoints, producing outputs of the right kind."""
from __future__ import annotations

import argparse
import os
import re

import numpy as np
import pytest
from PIL import Image

from tasks.config import CaptionConfig, ModelRef


def sample_images():
    from skimage import data

    return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]


def test_offline_during_tests():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_make_tiny_writes_saver_layouts_and_config(tiny_models):
    out = tiny_models.dir
    assert (out / "clip" / "open_clip_config.json").is_file()
    assert (out / "clip" / "open_clip_model.safetensors").is_file()
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (out / "blip" / name).is_file(), name
    models = tiny_models.config.models
    assert models.embedder.backend == "open_clip" and models.embedder.name == f"local-dir:{out / 'clip'}"
    assert models.captioner.backend == "blip" and models.captioner.name == str(out / "blip")
    from tasks.offline.tiny_models import TINY_MODELS

    if "llava" in TINY_MODELS:
        assert len(models.judges) == 3
        for ref in models.judges:
            assert ref.name.startswith(str(out))
    else:
        assert models.judges == []
    assert "RANDOM-WEIGHT" in tiny_models.config_path.read_text()


def test_cli_registers_make_tiny():
    from flows import cli
    from flows.commands import models

    assert "flows.commands.models" in cli.COMMAND_MODULES
    args = cli.parse_args(["models", "make-tiny", "--out", "x", "--seed", "3"])
    assert (args.out, args.seed, args.func) == ("x", 3, models.make_tiny)


def test_bad_base_config_is_a_user_error(tmp_path):
    from flows.cli import UserError
    from flows.commands.models import make_tiny

    bad = tmp_path / "bad.yaml"
    bad.write_text("caption:\n  batch_size: 0\n")
    with pytest.raises(UserError, match=r"caption\.batch_size"):
        make_tiny(argparse.Namespace(out=str(tmp_path / "m"), seed=0, base_config=str(bad)))


def test_captions_are_vocabulary_words(tiny_captioner):
    from tasks.offline.tiny_models.blip import SPECIALS, vocabulary

    words = set(vocabulary()) - set(SPECIALS)
    captions = tiny_captioner.caption(sample_images())
    assert len(captions) == 3
    for caption in captions:
        assert isinstance(caption, str) and caption
        assert set(caption.split()) <= words, caption
    # Cross-attention carries the image into the text: different pictures, different captions.
    assert len(set(captions)) > 1
    assert re.fullmatch(r"blip:blip@[0-9a-f]{12}", tiny_captioner.model_id)


def test_caption_batch_uses_max_new_tokens(tiny_models, tiny_captioner):
    from tasks.caption.backends import build_captioner

    short = build_captioner(tiny_models.captioner, CaptionConfig(max_new_tokens=2))
    image = sample_images()[:1]
    assert len(short.caption(image)[0].split()) <= 2
    assert tiny_captioner.caption([]) == []
    pixels = tiny_captioner.preprocess(image[0])
    assert tuple(pixels.shape) == (3, 384, 384)
    assert short.model_id == tiny_captioner.model_id  # generation settings are not the model


def test_embedder_loads_local_dir(tiny_embedder):
    assert tiny_embedder.dim == 64 and tiny_embedder.normalised
    assert re.fullmatch(r"open_clip:local-dir:clip@[0-9a-f]{12}", tiny_embedder.model_id)
    x = tiny_embedder.preprocess(sample_images()[0])
    assert tuple(x.shape) == (3, 224, 224)


def test_unknown_backend_and_missing_model_are_clear(tmp_path):
    from tasks.caption.backends import build_captioner
    from tasks.embed.backends import build_embedder
    from data_manifests.registry import RegistryError
    from tasks.model_ids import ModelLoadError

    with pytest.raises(RegistryError, match=r"unknown captioner backend 'nope'; known: blip"):
        build_captioner(ModelRef(backend="nope", name="x"))
    with pytest.raises(RegistryError, match=r"unknown embedder backend 'nope'; known: open_clip"):
        build_embedder(ModelRef(backend="nope", name="x"))
    with pytest.raises(ModelLoadError, match="cannot load BLIP"):
        build_captioner(ModelRef(backend="blip", name=str(tmp_path / "absent")))
    with pytest.raises(ModelLoadError, match="cannot load open_clip"):
        build_embedder(ModelRef(backend="open_clip", name=f"local-dir:{tmp_path / 'absent'}"))


def test_fingerprint_follows_content(tmp_path):
    from tasks.model_ids import fingerprint

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "config.json").write_text("{}")
    (a / "model.safetensors").write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    (b / "model.safetensors").write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    assert fingerprint(a) == fingerprint(b)
    (b / "model.safetensors").write_bytes(np.arange(1, 11, dtype=np.uint8).tobytes())
    assert fingerprint(a) != fingerprint(b)
