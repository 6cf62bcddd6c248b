"""Judges: p_real arithmetic, the tiny LLaVA judges, the transformers backend, and the vLLM backend
over real HTTP (against `unirain serve-judge` and against small socket servers that misbehave)."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.config import ModelRef, VoteConfig
from tasks.vote.judges import (
    NO_MASS,
    REFUSED,
    JudgeRequest,
    JudgeResult,
    JudgeUnavailable,
    answer_word,
    make_judge,
    p_real_from_logprobs,
    yes_no_token_ids,
)

L = math.log


# --- p_real arithmetic -------------------------------------------------------------------------


def test_p_real_from_logprobs_hand_computed():
    assert p_real_from_logprobs({"Yes": L(0.6), "No": L(0.2), "maybe": L(0.2)}) == pytest.approx(0.75)
    assert p_real_from_logprobs({"No": L(0.9), "the": L(0.1)}) == pytest.approx(0.0)


def test_spellings_are_summed_and_duplicates_count():
    top = {" Yes": L(0.30), "yes": L(0.10), "YES": L(0.05), "\u2581no": L(0.20), " No": L(0.10), "No.": L(0.2)}
    # yes = .30+.10+.05 = .45, no = .20+.10 = .30 ("No." is not an answer)
    assert p_real_from_logprobs(top) == pytest.approx(0.45 / 0.75)
    # vLLM may report two token ids with the same text: a list of pairs keeps both
    assert p_real_from_logprobs([("Yes", L(0.1)), ("Yes", L(0.1)), ("\u0120no", L(0.3))]) == pytest.approx(0.2 / 0.5)
    assert [answer_word(t) for t in (" Yes", "\u2581YES", "no", "Yesterday", "Nope", "No.", "")] == [
        "yes", "yes", "no", None, None, None, None]


def test_no_yes_no_mass_is_an_abstention():
    assert p_real_from_logprobs({"maybe": L(0.7), "the": L(0.3)}) is None
    res = JudgeResult.from_masses(0.0, 0.0)
    assert res.p_real is None and not res.ok and res.error.startswith(NO_MASS)


def test_yes_no_token_ids_are_looked_up_not_assumed():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # A GPT-2 style byte-level vocabulary: " Yes" is spelled "ĠYes".
    vocab = {"<unk>": 0, "\u0120Yes": 1, "Yes": 2, "\u0120no": 3, "\u0120the": 4, "\u0120Yesterday": 5, "NO": 6}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    assert yes_no_token_ids(tok) == ([1, 2], [3, 6])


# --- the tiny LLaVA judges + in-process backend -----------------------------------------------


def write_images(folder, n=5, seed=0):
    """Small RGB PNGs of different sizes and textures, plus one file that is not an image."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, 3)
        arr = np.clip(base + rng.normal(0, 8 + 20 * i, (40 + 6 * i, 56, 3)), 0, 255).astype(np.uint8)
        paths.append(str(folder / f"img{i}.png"))
        Image.fromarray(arr).save(paths[-1])
    bad = folder / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths, str(bad)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("judge_images"))


@pytest.fixture(scope="module")
def requests_(images):
    paths, bad = images
    reqs = [JudgeRequest("ref0", paths[0], f"cand{i}", paths[i]) for i in range(1, len(paths))]
    reqs.append(JudgeRequest("ref1", paths[1], "cand0", paths[0]))
    reqs.append(JudgeRequest("ref0", paths[0], "broken", bad))
    return reqs


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from tasks.offline.tiny_models import TINY_MODELS

    refs = TINY_MODELS.get("llava")(tmp_path_factory.mktemp("tiny_llava"), 0)
    return [ModelRef.model_validate(r) for r in refs]


@pytest.fixture(scope="module")
def local_judge(tiny_llava):
    return make_judge(tiny_llava[0], VoteConfig())


def test_make_llava_builds_three_different_judges(tiny_llava, local_judge, requests_):
    from pathlib import Path

    assert [Path(r.name).name for r in tiny_llava] == ["judge_a", "judge_b", "judge_c"]
    assert all(r.backend == "transformers" for r in tiny_llava)
    for ref in tiny_llava:
        for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
            assert (Path(ref.name) / name).is_file(), name
    tok = local_judge.tokenizer
    assert tok.padding_side == "left" and "<image>" in tok.get_vocab()
    yes, no = yes_no_token_ids(tok)
    spelled = sorted(tok.decode([i]) for i in yes + no)
    assert spelled == sorted(["Yes", " Yes", "yes", " yes", "YES", " YES", "No", " No", "no", " no", "NO", " NO"])
    # reference first, candidate second, then the question; generation prompt at the end
    assert local_judge.prompt.index("<image>") < local_judge.prompt.index("first image")
    assert local_judge.prompt.endswith("ASSISTANT:")
    other = make_judge(tiny_llava[1])
    a, b = local_judge.judge(requests_[:2]), other.judge(requests_[:2])
    assert all(abs(x.p_real - y.p_real) > 1e-3 for x, y in zip(a, b))  # different seeds, different judges


def test_p_real_from_known_logits(local_judge):
    yes, no = local_judge.yes_ids, local_judge.no_ids
    vocab = len(local_judge.tokenizer)
    logits = torch.zeros(1, vocab)
    logits[0, yes[0]] = L(3.0)  # this spelling weighs 3, every other token 1
    logits[0, no[0]] = L(2.0)
    p_yes, p_no = local_judge.masses(logits.log_softmax(-1))
    z = vocab - 2 + 3 + 2
    assert p_yes[0] == pytest.approx((3 + len(yes) - 1) / z)
    assert p_no[0] == pytest.approx((2 + len(no) - 1) / z)
    res = JudgeResult.from_masses(p_yes[0], p_no[0])
    assert res.p_real == pytest.approx((3 + len(yes) - 1) / (3 + len(yes) - 1 + 2 + len(no) - 1))


def test_transformers_backend_batched_equals_single(local_judge, requests_):
    batched = local_judge.judge(requests_)
    single = [local_judge.judge([r])[0] for r in requests_]
    for b, s in zip(batched[:-1], single[:-1]):
        assert b.ok and s.ok and 0.0 < b.p_real < 1.0
        assert b.p_real == pytest.approx(s.p_real, abs=1e-5)
        assert b.p_yes + b.p_no == pytest.approx(1.0, abs=1e-3)  # the tiny judges answer yes or no
    assert len({round(r.p_real, 4) for r in batched[:-1]}) > 1  # the images matter
    assert batched[-1].p_real is None and "broken.png" in batched[-1].error  # one bad file, one abstention


# --- vLLM backend against a real `unirain serve-judge` ----------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(base: str, proc: subprocess.Popen, limit_s: float = 180.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve-judge exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"serve-judge at {base} not healthy after {limit_s} s")


API_KEY_VAR = "UNIRAIN_TEST_JUDGE_KEY"
API_KEY = "k3y-not-for-logs"


@pytest.fixture(scope="module")
def judge_server(tiny_llava):
    port = free_port()
    env = dict(os.environ, **{API_KEY_VAR: API_KEY})
    cmd = [sys.executable, "-m", "flows.cli", "serve-judge", "--model", tiny_llava[0].name, "--port", str(port),
           "--served-model-name", "tiny-judge-a", "--api-key-env", API_KEY_VAR]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def http_ref(base_url: str, **options) -> ModelRef:
    return ModelRef(backend="vllm", name="tiny-judge-a", options={"base_url": f"{base_url}/v1", **options})


def test_http_judge_matches_in_process(judge_server, local_judge, requests_, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", API_KEY)
    remote = make_judge(http_ref(judge_server, api_key_env="JUDGE_KEY_FOR_TEST"), VoteConfig(max_concurrency=3))
    remote.check()
    over_http = remote.judge(requests_)
    in_process = local_judge.judge(requests_)
    for h, p in zip(over_http[:-1], in_process[:-1]):
        assert h.ok, h.error
        assert h.p_real == pytest.approx(p.p_real, abs=1e-4)
        assert h.p_yes == pytest.approx(p.p_yes, abs=1e-4)
    assert over_http[-1].p_real is None and "broken.png" in over_http[-1].error
    assert API_KEY not in repr(remote)


def test_serve_judge_response_shape_is_vllms(judge_server, local_judge, requests_):
    from tasks.vote.judges.vllm_backend import VLLMJudge

    payload = VLLMJudge(http_ref(judge_server), VoteConfig()).payload(requests_[0])
    assert [p["type"] for p in payload["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    assert payload["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = httpx.post(f"{judge_server}/v1/chat/completions", json=payload, headers=headers, timeout=60).json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny-judge-a"
    choice = body["choices"][0]
    first = choice["logprobs"]["content"][0]
    assert len(first["top_logprobs"]) == 20
    assert first["token"] == choice["message"]["content"] == first["top_logprobs"][0]["token"]
    for entry in first["top_logprobs"]:
        assert set(entry) == {"token", "logprob", "bytes"} and bytes(entry["bytes"]).decode() == entry["token"]
    assert body["usage"]["completion_tokens"] == 1
    models = httpx.get(f"{judge_server}/v1/models", headers=headers).json()
    assert [m["id"] for m in models["data"]] == ["tiny-judge-a"]
    # vLLM's limits and errors
    too_many = httpx.post(f"{judge_server}/v1/chat/completions", json={**payload, "top_logprobs": 21}, headers=headers)
    assert too_many.status_code == 400 and "top_logprobs" in too_many.json()["error"]["message"]
    wrong_model = httpx.post(f"{judge_server}/v1/chat/completions", json={**payload, "model": "x"}, headers=headers)
    assert wrong_model.status_code == 404
    assert httpx.post(f"{judge_server}/v1/chat/completions", json=payload).status_code == 401


def test_wrong_key_or_model_fails_at_start_naming_endpoint(judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "wrong-key")
    with pytest.raises(JudgeUnavailable, match=f"{judge_server}/v1 refused the API key") as err:
        make_judge(http_ref(judge_server, api_key_env="JUDGE_KEY_FOR_TEST")).check()
    assert "wrong-key" not in str(err.value)
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", API_KEY)
    with pytest.raises(JudgeUnavailable, match="does not serve 'other-model'"):
        make_judge(http_ref(judge_server, api_key_env="JUDGE_KEY_FOR_TEST", served_model_name="other-model")).check()
    monkeypatch.delenv("JUDGE_KEY_FOR_TEST")
    with pytest.raises(JudgeUnavailable, match="JUDGE_KEY_FOR_TEST is not set"):
        make_judge(http_ref(judge_server, api_key_env="JUDGE_KEY_FOR_TEST"))


def test_api_key_from_a_prefect_secret_block(judge_server, prefect_harness):
    from prefect.blocks.system import Secret

    Secret(value=API_KEY).save("unirain-test-judge-key", overwrite=True)
    judge = make_judge(http_ref(judge_server, api_key_secret="unirain-test-judge-key"))
    judge.check()
    assert API_KEY not in repr(judge)
    with pytest.raises(JudgeUnavailable, match="cannot load Prefect Secret block 'no-such-block'"):
        make_judge(http_ref(judge_server, api_key_secret="no-such-block"))


# --- faults over real HTTP --------------------------------------------------------------------


FAST_RETRY = VoteConfig(timeout_s=0.5, retries=2, backoff_s=0.01, max_concurrency=2)


class ScriptedServer:
    """A real HTTP server on loopback whose n-th chat request gets `script[min(n, len-1)]`:
    ("sleep", seconds) | ("status", code) | ("answer", {token: logprob})."""

    def __init__(self, script):
        self.script, self.posts, self.lock = script, 0, threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "tiny-judge-a", "object": "model"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    kind, arg = outer.script[min(outer.posts, len(outer.script) - 1)]
                    outer.posts += 1
                if kind == "sleep":
                    time.sleep(arg)
                    self._send(200, {})
                elif kind == "status":
                    self._send(arg, {"error": {"message": "boom", "code": arg}})
                else:
                    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in arg.items()]
                    first = {**top[0], "top_logprobs": top}
                    self._send(200, {"object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                         "logprobs": {"content": [first]}, "finish_reason": "length"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(script):
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_server_down_fails_fast_naming_endpoint(requests_):
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    judge = make_judge(http_ref(base), FAST_RETRY)
    with pytest.raises(JudgeUnavailable, match=f"judge server {base}/v1 is unreachable"):
        judge.check()
    results = judge.judge(requests_[:2])  # went down mid-run: abstentions, not an exception
    assert all(r.p_real is None and "connection error" in r.error and "after 3 attempts" in r.error for r in results)


def test_timeout_is_retried_then_abstains(scripted, requests_):
    server = scripted([("sleep", 3.0)])
    [res] = make_judge(http_ref(server.base), FAST_RETRY).judge(requests_[:1])
    assert res.p_real is None and "timeout after 0.5 s" in res.error and "after 3 attempts" in res.error
    assert server.posts == 3


def test_http_500_is_retried_then_abstains(scripted, requests_):
    server = scripted([("status", 500)])
    [res] = make_judge(http_ref(server.base), FAST_RETRY).judge(requests_[:1])
    assert res.p_real is None and "HTTP 500" in res.error and server.posts == 3


def test_retries_recover_from_transient_500(scripted, requests_):
    server = scripted([("status", 503), ("status", 500), ("answer", {" Yes": L(0.3), "No": L(0.1), "the": L(0.6)})])
    [res] = make_judge(http_ref(server.base), FAST_RETRY).judge(requests_[:1])
    assert res.p_real == pytest.approx(0.75) and server.posts == 3


@pytest.mark.parametrize("status", [400, 404, 413, 415, 422])
def test_permanent_4xx_is_a_final_abstention(scripted, requests_, status, tmp_path):
    """Issue 10 item 15: a 4xx other than 401/403/408/429 is asked once, recorded as an error and
    cached, so a yes + no + refused pair is a judge_error, not `undecided` for ever."""
    from tasks.vote.judge_cache import JudgeCache, is_final
    from tasks.vote.stage import ABSTAIN, JUDGE_ERROR, NO, YES, outcome, tally

    server = scripted([("status", status)])
    [res] = make_judge(http_ref(server.base), FAST_RETRY).judge(requests_[:1])
    assert res.p_real is None and res.error.startswith(REFUSED) and f"HTTP {status}" in res.error
    assert server.posts == 1 and is_final(res)
    assert outcome(res.p_real, res.error, 0.5) == ABSTAIN
    assert tally([YES, NO, outcome(res.p_real, res.error, 0.5)]).reason == JUDGE_ERROR
    with JudgeCache(tmp_path) as cache:
        assert cache.put_many("m", "v1", [(("r", "c"), res)]) == 1
        assert cache.get_many("m", "v1", [("r", "c")])[("r", "c")].error == res.error


@pytest.mark.parametrize("status, posts", [(401, 1), (403, 1), (408, 3), (429, 3)])
def test_key_and_rate_errors_stay_transient(scripted, requests_, status, posts):
    from tasks.vote.judge_cache import is_final
    from tasks.vote.stage import RETRY, UNDECIDED, NO, YES, outcome, tally

    server = scripted([("status", status)])
    [res] = make_judge(http_ref(server.base), FAST_RETRY).judge(requests_[:1])
    assert res.p_real is None and f"HTTP {status}" in res.error and not is_final(res)
    assert server.posts == posts
    assert tally([YES, NO, outcome(res.p_real, res.error, 0.5)]).reason == UNDECIDED
    assert outcome(res.p_real, res.error, 0.5) == RETRY


def test_answer_without_yes_no_mass_abstains(scripted, requests_):
    server = scripted([("answer", {"rain": L(0.5), "the": L(0.3), "maybe": L(0.2)})])
    results = make_judge(http_ref(server.base), FAST_RETRY).judge(requests_[:2])
    assert all(r.p_real is None and r.error.startswith(NO_MASS) and "'rain'" in r.error for r in results)
    assert server.posts == 2  # asked once each: the same question gets the same answer


def test_serve_judge_rejects_a_missing_model_folder(tmp_path, capsys):
    from flows.cli import main

    assert main(["serve-judge", "--model", str(tmp_path / "nope"), "--port", "8000"]) == 2
    assert "not a folder" in capsys.readouterr().err
