"""`unirain serve-judge`: a local transformers VLM behind vLLM's OpenAI-compatible API.

Only what a judge needs: `/health`, `/v1/models`, and `/v1/chat/completions` answering ONE
greedy token with `logprobs` / `top_logprobs` in vLLM's response shape
(`choices[0].logprobs.content[0].top_logprobs` = [{token, logprob, bytes}, ...], tokens as
decoded text like vLLM's). Images arrive as base64 data URLs in `image_url` parts. Errors use
vLLM's `{"error": {...}}` body. Requests run one at a time: a CPU has no spare cores for two.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tasks.imageio import ImageRejected, decode_rgb

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,(?P<data>.*)$", re.DOTALL)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.kind = status, kind


def _error(message: str, status: int, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status_code=status)


def decode_data_url(url: str):
    match = _DATA_URL.match(url)
    if not match:
        raise BadRequest("serve-judge accepts images only as base64 data URLs (data:image/...;base64,...)")
    try:
        return decode_rgb(base64.b64decode(match["data"], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"image data URL is not valid base64: {exc}") from None
    except ImageRejected as exc:
        raise BadRequest(f"cannot decode image: {exc}") from None


def to_local_chat(messages: Any) -> tuple[list[dict[str, Any]], list]:
    """OpenAI messages -> the same messages with `{"type": "image"}` parts, plus the decoded images."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty list")
    chat, images = [], []
    for msg in messages:
        if not isinstance(msg, dict) or "role" not in msg:
            raise BadRequest("each message needs a `role`")
        content = msg.get("content")
        if isinstance(content, str):
            chat.append({"role": msg["role"], "content": content})
            continue
        parts = []
        for part in content or []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image_url":
                ref = part.get("image_url")
                images.append(decode_data_url(ref.get("url", "") if isinstance(ref, dict) else str(ref)))
                parts.append({"type": "image"})
            else:
                raise BadRequest(f"unsupported content part type {kind!r} (serve-judge takes text and image_url)")
        chat.append({"role": msg["role"], "content": parts})
    return chat, images


def create_app(judge, served_model_name: str, max_logprobs: int = 20, api_key: str | None = None) -> FastAPI:
    """`judge` is a `TransformersJudge` (its processor, model and chat template)."""
    app = FastAPI(title="unirain serve-judge", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    created = int(time.time())
    tokenizer = judge.tokenizer

    def token_entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])  # decoded text, as vLLM reports it (" Yes", not "▁Yes")
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            sent = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(sent, f"Bearer {api_key}".encode()):
                return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest):
        return _error(str(exc), exc.status, exc.kind)

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({})

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {"id": served_model_name, "object": "model", "created": created, "owned_by": "unirain", "root": judge.ref.name}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    def chat_completions(body: dict[str, Any]) -> dict[str, Any]:
        # A plain `def`: FastAPI runs it in a worker thread, so /health answers during a forward pass.
        model = body.get("model") or served_model_name
        if model != served_model_name:
            raise BadRequest(f"The model `{model}` does not exist.", 404, "NotFoundError")
        if body.get("stream"):
            raise BadRequest("serve-judge does not stream")
        if (body.get("n") or 1) != 1:
            raise BadRequest("serve-judge returns one choice (n=1)")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens not in (None, 1):
            raise BadRequest("serve-judge answers with exactly one token: max_tokens must be 1")
        want_logprobs = bool(body.get("logprobs"))
        top_k = body.get("top_logprobs")
        if top_k is not None and not want_logprobs:
            raise BadRequest("when using `top_logprobs`, `logprobs` must be set to true.")
        top_k = int(top_k or 0)
        if not 0 <= top_k <= max_logprobs:
            raise BadRequest(f"Requested top_logprobs ({top_k}) must be between 0 and the maximum {max_logprobs}")
        chat, images = to_local_chat(body.get("messages"))
        prompt = judge.render(chat)
        with lock:
            rows, lengths = judge.next_token_logprobs([prompt], [images], return_lengths=True)
        logprobs, n_prompt = rows[0], int(lengths[0])
        best = int(logprobs.argmax())
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": tokenizer.decode([best]), "tool_calls": []},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        if want_logprobs:
            top = logprobs.topk(top_k) if top_k else None
            entry = token_entry(best, float(logprobs[best]))
            entry["top_logprobs"] = (
                [token_entry(int(i), float(v)) for v, i in zip(top.values, top.indices)] if top is not None else []
            )
            choice["logprobs"] = {"content": [entry]}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served_model_name,
            "choices": [choice],
            "usage": {"prompt_tokens": n_prompt, "total_tokens": n_prompt + 1, "completion_tokens": 1},
        }

    return app
