"""HTTP judge: a vLLM server (or `unirain serve-judge`) through the OpenAI-compatible chat API.

Each pair is one `/v1/chat/completions` request: the reference image, then the candidate (so the
server's prefix cache reuses the reference across its candidates), then the question; one token,
greedy, with the top-20 logprobs. `p_real` is computed from those logprobs.

Faults never raise out of `judge()`: a timeout, a connection error, HTTP 408/429/5xx are retried
with exponential backoff, then the pair gets a transient abstention carrying the error text (asked
again by the next run). HTTP 401/403 (a key problem, fixable) are transient abstentions at once. Any
other 4xx is permanent (`REFUSED`): the server refuses this very request, so it is a final abstention,
cached and not asked again, like an answer without yes/no mass. Only `check_endpoint()` raises, at
stage start, naming the endpoint.

Options (`models.judges[].options`): `base_url` (required, e.g. "http://127.0.0.1:8000/v1"),
`served_model_name` (default: the ref's `name`), `api_key_env` (an environment variable) or
`api_key_secret` (a Prefect Secret block name), `top_logprobs` (20, vLLM's default cap).
Timeout, retries, backoff and concurrency come from the `vote:` section.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, model_validator

from tasks.config import ModelRef, VoteConfig
from tasks.imageio import ImageRejected, decode_rgb, probe_image_bytes, read_file_bytes
from tasks.vote.judges.base import (
    JUDGES, REFUSED, Judge, JudgeOptions, JudgeRequest, JudgeResult, JudgeUnavailable, yes_no_masses,
)
from tasks.vote.judges.prompt import judge_messages
from tasks.secret_values import placeholder_reason

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
KEY_STATUSES = frozenset({401, 403})  # not permanent: the key can be fixed and the run repeated
# Sent as they are; anything else (16-bit, CMYK, TIFF, ...) is decoded and re-encoded as PNG.
_PASSTHROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_DATA_URL_CACHE = 64  # encoded images kept: references repeat across their candidates


class VLLMOptions(JudgeOptions):
    base_url: str = Field(description='the server\'s API root, e.g. "http://127.0.0.1:8000/v1"')
    served_model_name: str | None = None  # default: the ref's name
    api_key_env: str | None = None  # an environment variable holding the key
    api_key_secret: str | None = None  # a Prefect Secret block holding the key
    top_logprobs: int = Field(20, ge=1)  # vLLM's default cap is 20

    @model_validator(mode="after")
    def _one_key_source(self):
        if self.api_key_env and self.api_key_secret:
            raise ValueError("give api_key_env or api_key_secret, not both")
        return self


def resolve_api_key(options: VLLMOptions) -> str | None:
    """The API key from `api_key_env` or `api_key_secret`; errors name the source, never the value."""
    env, secret = options.api_key_env, options.api_key_secret
    if env:
        value = os.environ.get(env)
        if not value:
            raise JudgeUnavailable(f"judge API key: environment variable {env} is not set")
        reason = placeholder_reason(value)
        if reason:  # docker/.env.example's `change-me` left in place
            raise JudgeUnavailable(f"judge API key: environment variable {env} {reason}; set the real key")
        return value
    if secret:
        try:
            from prefect.blocks.system import Secret

            return Secret.load(secret).get()
        except Exception as exc:  # missing block, no API: say which block, not why in detail
            raise JudgeUnavailable(f"judge API key: cannot load Prefect Secret block {secret!r} ({type(exc).__name__})") from None
    return None


def image_data_url(path: str | Path) -> str:
    """A base64 data URL of the image; raises ImageRejected for a file that is not a usable image.

    The file is probed first (format, size and truncation from the header and the end, as at
    ingest; no pixel decoding), so the server gets no garbage; 8-bit RGB JPEG/PNG/WebP travel as
    their own bytes, anything else (16-bit, grayscale, RGBA, CMYK, TIFF, ...) as a new RGB PNG.
    """
    try:
        data = read_file_bytes(path)  # a FIFO or a folder where an image was is a reject, never a hang
        info = probe_image_bytes(data, min_side=1)
        # Rotated photos are sent upright: servers differ in whether they apply EXIF orientation.
        mime = _PASSTHROUGH.get(info.format) if info.mode == "RGB" and info.orientation == 1 else None
        if mime is None:
            buf = io.BytesIO()
            decode_rgb(data).save(buf, format="PNG")
            data, mime = buf.getvalue(), "image/png"
    except OSError as exc:
        raise ImageRejected("unreadable", f"{path}: {exc.strerror or exc}") from None
    except ImageRejected as exc:
        raise ImageRejected(exc.reason, f"{path}: {exc.detail}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@JUDGES.register("vllm")
class VLLMJudge(Judge):
    Options = VLLMOptions

    def __init__(self, ref: ModelRef, vote: VoteConfig | None = None):
        super().__init__(ref, vote)
        opts = self.options
        self.base_url = opts.base_url.rstrip("/")
        self.served_model = opts.served_model_name or ref.name
        self.top_logprobs = opts.top_logprobs
        self._api_key = resolve_api_key(opts)
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._urls_lock = threading.Lock()  # payloads are built in worker threads

    # --- requests -----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _data_url(self, path: str) -> str:
        with self._urls_lock:
            url = self._urls.get(path)
            if url is not None:
                self._urls.move_to_end(path)
                return url
        url = image_data_url(path)
        with self._urls_lock:
            self._urls[path] = url
            if len(self._urls) > _DATA_URL_CACHE:
                self._urls.popitem(last=False)
        return url

    def payload(self, req: JudgeRequest) -> dict[str, Any]:
        def part(path: str) -> dict[str, Any]:
            return {"type": "image_url", "image_url": {"url": self._data_url(path)}}

        return {
            "model": self.served_model,
            "messages": judge_messages(part(req.ref_path) if req.has_reference else None, part(req.cand_path),
                                       req.degradation),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    # --- start-up check ---------------------------------------------------------------------

    def check_endpoint(self) -> None:
        """Fail fast, naming the endpoint, when the server is unreachable or does not serve the model."""
        url = f"{self.base_url}/models"
        try:
            resp = httpx.get(url, headers=self._headers(), timeout=min(self.vote.timeout_s, 10.0))
        except httpx.HTTPError as exc:
            raise JudgeUnavailable(f"judge server {self.base_url} is unreachable ({type(exc).__name__}: {exc})") from None
        if resp.status_code in (401, 403):
            raise JudgeUnavailable(f"judge server {self.base_url} refused the API key (HTTP {resp.status_code})")
        if resp.status_code != 200:
            raise JudgeUnavailable(f"judge server {self.base_url}: GET /models returned HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            served = [m["id"] for m in resp.json()["data"]]
        except Exception:
            raise JudgeUnavailable(f"judge server {self.base_url}: GET /models is not an OpenAI model list") from None
        if self.served_model not in served:
            raise JudgeUnavailable(f"judge server {self.base_url} does not serve {self.served_model!r} (it serves {served})")

    check = check_endpoint

    # --- judging ----------------------------------------------------------------------------

    def judge(self, pairs: list[JudgeRequest]) -> list[JudgeResult]:
        return _run_sync(self.ajudge(pairs))

    async def ajudge(self, pairs: list[JudgeRequest]) -> list[JudgeResult]:
        n = self.vote.max_concurrency
        sem = asyncio.Semaphore(n)
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        timeout = httpx.Timeout(self.vote.timeout_s)
        async with httpx.AsyncClient(headers=self._headers(), timeout=timeout, limits=limits) as client:
            return list(await asyncio.gather(*(self._one(client, sem, req) for req in pairs)))

    async def _one(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, req: JudgeRequest) -> JudgeResult:
        async with sem:  # also bounds how many encoded images are held at once
            try:
                payload = await asyncio.to_thread(self.payload, req)
            except ImageRejected as exc:
                return JudgeResult.failed(f"unreadable image: {exc.detail}")
            except Exception as exc:  # one odd file must not fail the batch
                return JudgeResult.failed(f"cannot build the request: {type(exc).__name__}: {exc}")
            url = f"{self.base_url}/chat/completions"
            attempts = self.vote.retries + 1
            error = ""
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(self.vote.backoff_s * 2 ** (attempt - 1))
                try:
                    # httpx's timeout bounds each phase; wait_for bounds the whole request
                    resp = await asyncio.wait_for(client.post(url, json=payload), self.vote.timeout_s)
                except (httpx.TimeoutException, asyncio.TimeoutError):
                    error = f"timeout after {self.vote.timeout_s:g} s"
                    continue
                except httpx.HTTPError as exc:  # connection refused or reset, protocol errors
                    error = f"connection error: {type(exc).__name__}: {exc}"
                    continue
                if resp.status_code == 200:
                    return parse_chat_completion(resp)
                error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if is_permanent_status(resp.status_code):
                    return JudgeResult.failed(f"{REFUSED} by {url}: {error}")
                if resp.status_code not in RETRY_STATUSES:
                    return JudgeResult.failed(f"{url}: {error}")
            return JudgeResult.failed(f"{url}: {error} (after {attempts} attempts)")


def is_permanent_status(status: int) -> bool:
    """A 4xx that asking again cannot change (not a key problem, not a timeout, not a rate limit)."""
    return 400 <= status < 500 and status not in RETRY_STATUSES and status not in KEY_STATUSES


def parse_chat_completion(resp: httpx.Response) -> JudgeResult:
    """p_real from `choices[0].logprobs.content[0].top_logprobs` of an OpenAI chat completion."""
    try:
        first = resp.json()["choices"][0]["logprobs"]["content"][0]
        entries = [(t["token"], float(t["logprob"])) for t in first.get("top_logprobs") or []]
        if not entries:  # a server that returns only the chosen token
            entries = [(first["token"], float(first["logprob"]))]
    except Exception as exc:
        return JudgeResult.failed(f"unparsable answer ({type(exc).__name__}: {exc}): {resp.text[:200]}")
    p_yes, p_no = yes_no_masses(entries)
    return JudgeResult.from_masses(p_yes, p_no, detail="top tokens: " + ", ".join(repr(t) for t, _ in entries[:5]))


def _run_sync(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
