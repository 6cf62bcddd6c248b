"""The tasks-side pluggable kinds share one Registry: one wording for unknown names, duplicates
refused, and model backends whose `options:` are checked at config load, naming the key."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_manifests.config_base import ConfigError
from data_manifests.registry import Registry, RegistryError
from tasks.config import ModelRef, parse_run_config

ROOT = Path(__file__).resolve().parents[1]


def _registries():
    from tasks.ingest.adapters import ADAPTERS
    from tasks.caption.backends import CAPTIONERS
    from tasks.embed.backends import EMBEDDERS
    from tasks.vote.judges import JUDGES
    from tasks.offline.synth import RAIN_GENERATORS
    from tasks.offline.tiny_models import TINY_MODELS

    return {
        "dataset adapter": (ADAPTERS, "rain13k"),
        "captioner backend": (CAPTIONERS, "blip"),
        "embedder backend": (EMBEDDERS, "open_clip"),
        "judge backend": (JUDGES, "vllm"),
        "rain generator": (RAIN_GENERATORS, "day_streak"),
        "tiny model": (TINY_MODELS, "llava"),
    }


@pytest.mark.parametrize("kind", list(_registries()))
def test_unknown_name_has_one_wording(kind):
    registry, known = _registries()[kind]
    assert isinstance(registry, Registry) and registry.kind == kind
    with pytest.raises(RegistryError) as err:
        registry.get("no-such-thing")
    message = str(err.value)
    assert message.startswith(f"unknown {kind} 'no-such-thing'")
    assert message.endswith("known: " + ", ".join(registry.names()))
    assert known in registry.names()
    assert isinstance(err.value, ValueError)  # the CLI's `except ValueError` reports it cleanly


@pytest.mark.parametrize("kind", list(_registries()))
def test_duplicate_name_is_refused(kind):
    registry, known = _registries()[kind]
    before = registry.get(known)

    def impostor(*args, **kwargs):
        raise AssertionError("never registered")

    with pytest.raises(RegistryError, match=f"{kind} '{known}' is already registered"):
        registry.register(known)(impostor)
    assert registry.get(known) is before


def test_factories_go_through_the_registries():
    from tasks.ingest.adapters import get_adapter
    from tasks.caption.backends import build_captioner
    from tasks.embed.backends import build_embedder
    from tasks.vote.judges import make_judge
    from tasks.offline.synth import get_generator

    for call, kind in [
        (lambda: get_adapter("rain31k"), "dataset adapter"),
        (lambda: build_captioner(ModelRef(backend="git", name="x")), "captioner backend"),
        (lambda: build_embedder(ModelRef(backend="siglip", name="x")), "embedder backend"),
        (lambda: make_judge(ModelRef(backend="sglang", name="x")), "judge backend"),
        (lambda: get_generator("sandstorm"), "rain generator"),
    ]:
        with pytest.raises(RegistryError, match=f"^unknown {kind} '"):
            call()


# ---- options ------------------------------------------------------------------------------------

def _config(judge_options: dict, captioner_options: dict | None = None, embedder_options: dict | None = None):
    return parse_run_config({"models": {
        "captioner": {"backend": "blip", "name": "cap", "options": captioner_options or {}},
        "embedder": {"backend": "open_clip", "name": "ViT-B-32", "options": embedder_options or {}},
        "judges": [
            {"backend": "transformers", "name": "a", "options": {"batch_size": 2}},
            {"backend": "transformers", "name": "b", "options": judge_options},
            {"backend": "vllm", "name": "c", "options": {"base_url": "http://127.0.0.1:8000/v1"}},
        ],
    }})


def test_good_options_pass_and_are_parsed():
    from tasks.model_options import validate_model_options, validate_models

    cfg = _config({"batch_size": 4, "dtype": "float32"}, {"prompt": "a picture of"}, {"text_batch_size": 64})
    validate_models(cfg.models, origin="c.yaml")
    opts = validate_model_options("judge", cfg.models.judges[1], "models.judges[1]")
    assert (opts.batch_size, opts.dtype, opts.model_id) == (4, "float32", None)
    assert validate_model_options("embedder", cfg.models.embedder, "models.embedder").text_batch_size == 64


@pytest.mark.parametrize("judge, captioner, embedder, expected", [
    ({"batch_sise": 4}, None, None, r"^c\.yaml: models\.judges\[1\]\.options\.batch_sise: Extra inputs are not permitted$"),
    ({"batch_size": 0}, None, None, r"^c\.yaml: models\.judges\[1\]\.options\.batch_size: "),
    ({"dtype": "float8"}, None, None, r"^c\.yaml: models\.judges\[1\]\.options\.dtype: "),
    ({}, {"promt": "x"}, None, r"^c\.yaml: models\.captioner\.options\.promt: Extra inputs"),
    ({}, {"dtype": "fp16"}, None, r"^c\.yaml: models\.captioner\.options\.dtype: "),
    ({}, None, {"text_batch": 8}, r"^c\.yaml: models\.embedder\.options\.text_batch: Extra inputs"),
])
def test_option_typos_name_the_key(judge, captioner, embedder, expected):
    from tasks.model_options import validate_models

    with pytest.raises(ConfigError, match=expected):
        validate_models(_config(judge, captioner, embedder).models, origin="c.yaml")


def test_vllm_options_required_and_exclusive():
    from tasks.model_options import validate_model_options

    with pytest.raises(ConfigError, match=r"models\.judges\[0\]\.options\.base_url: Field required"):
        validate_model_options("judge", {"backend": "vllm", "name": "j"}, "models.judges[0]")
    both = {"base_url": "http://h/v1", "api_key_env": "K", "api_key_secret": "s"}
    with pytest.raises(ConfigError, match="api_key_env or api_key_secret, not both"):
        validate_model_options("judge", {"backend": "vllm", "name": "j", "options": both}, "models.judges[0]")


def test_unknown_backend_at_config_load_names_the_key():
    from tasks.model_options import validate_model_options

    with pytest.raises(ConfigError, match=r"^c\.yaml: models\.judges\[2\]\.backend: unknown judge backend 'vlm' \(did you mean 'vllm'\?\); known: "):
        validate_model_options("judge", ModelRef(backend="vlm", name="j"), "models.judges[2]", "c.yaml")


def test_a_built_judge_refuses_an_option_typo_too():
    """A judge built outside a config (serve-judge, tests) gets the same check, before any loading."""
    from tasks.vote.judges import make_judge

    with pytest.raises(ConfigError, match=r"judge j: options\.top_logprob: Extra inputs"):
        make_judge(ModelRef(backend="vllm", name="j", options={"base_url": "http://h/v1", "top_logprob": 5}))


# ---- a new judge backend is one file ---------------------------------------------------------------

ECHO_BACKEND = '''
from tasks.vote.judges.base import JUDGES, Judge, JudgeOptions, JudgeResult


class EchoOptions(JudgeOptions):
    answer: float = 0.5


@JUDGES.register("echo")
class EchoJudge(Judge):
    Options = EchoOptions

    def judge(self, pairs):
        return [JudgeResult(self.options.answer) for _ in pairs]
'''

ECHO_USE = '''
from data_manifests.config_base import ConfigError
from tasks.vote.judges import JudgeRequest, make_judge
from tasks.model_options import validate_model_options

judge = make_judge({"backend": "echo", "name": "e", "options": {"answer": 0.75}})
print(judge.judge([JudgeRequest("r", "r.png", "c", "c.png")])[0].p_real)
try:
    validate_model_options("judge", {"backend": "echo", "name": "e", "options": {"answr": 1}}, "models.judges[0]")
except ConfigError as exc:
    print(exc)
'''


def test_a_new_judge_backend_is_one_file(tmp_path):
    for package in ("tasks", "data_manifests"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tasks" / "vote" / "judges" / "echo_backend.py").write_text(ECHO_BACKEND)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", ECHO_USE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["0.75", "config: models.judges[0].options.answr: Extra inputs are not permitted"]
