"""`extends:` is one chain for every reader of a run config: the pipeline's, the trainer's and the evaluator's."""
from __future__ import annotations

import pytest

from data_manifests.config_base import ConfigError
from tasks.config import load_config_data
from unirain_model.config import load_eval_config, load_train_config


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_train_and_evaluate_follow_extends_with_paths_from_the_file_that_sets_them(tmp_path):
    (tmp_path / "base" / "models").mkdir(parents=True)
    model = _write(tmp_path / "base" / "models" / "m.yaml", "type: unirain\n")
    _write(tmp_path / "base" / "run.yaml", "train: {model: models/m.yaml, iters: 500, lr: 0.001, "
                                          "reweighting: {kind: uniform}}\nevaluate: {data: [tests_a]}\n")
    child = _write(tmp_path / "abl" / "child.yaml", "extends: ../base/run.yaml\ntrain: {iters: 20}\n")
    cfg = load_train_config(child)
    assert (cfg.model, cfg.iters, cfg.lr, cfg.reweighting.kind) == (str(model.resolve()), 20, 0.001, "uniform")
    assert load_eval_config(child).data == [str((tmp_path / "base" / "tests_a").resolve())]
    assert load_config_data(child)["train"]["iters"] == 20  # the pipeline sees the same merge

    override = _write(tmp_path / "abl" / "own.yaml", "extends: ../base/run.yaml\nevaluate: {data: [mine]}\n")
    assert load_eval_config(override).data == [str((tmp_path / "abl" / "mine").resolve())]


def test_an_inline_model_replaces_the_parents_model_instead_of_merging(tmp_path):
    _write(tmp_path / "a.yaml", "train: {model: {type: unirain, dim: 8, num_blocks: [1, 1, 1, 1]}}\n")
    child = _write(tmp_path / "b.yaml", "extends: a.yaml\ntrain: {model: {type: nafnet, width: 8}}\n")
    assert load_config_data(child)["train"]["model"] == {"type": "nafnet", "width": 8}


def test_a_loop_or_a_missing_parent_is_a_config_error(tmp_path):
    _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="makes a loop"):
        load_train_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_eval_config(_write(tmp_path / "c.yaml", "extends: nowhere.yaml\n"))
