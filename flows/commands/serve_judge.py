"""`unirain serve-judge`: serve a local VLM folder over vLLM's OpenAI-compatible chat API.

Anything beyond loopback needs an API key (or an explicit `--insecure`): an open judge port serves
anyone who can reach it. A key that is blank or a placeholder (`change-me`) is refused at start.
"""
import argparse
import ipaddress
import os
from pathlib import Path

import typer

from ..cli import choices, invoke

Dtype = choices("Dtype", ["float32", "float16", "bfloat16", "auto"])


def register(app: typer.Typer) -> None:
    @app.command(
        "serve-judge",
        short_help="serve a local transformers VLM as a judge over the OpenAI-compatible API vLLM speaks",
        help="Serve a transformers image-text-to-text model folder over the OpenAI-compatible "
             "/v1/chat/completions API in vLLM's response shape (one token, logprobs, top_logprobs). "
             "Point a judge with backend 'vllm' and options.base_url http://HOST:PORT/v1 at it. "
             "For CPU-only machines and tests; GPUs should run vLLM itself.")
    def serve_judge(
        model: str = typer.Option(..., help="model folder (loaded with from_pretrained)"),
        port: int = typer.Option(..., help="TCP port to listen on"),
        host: str = typer.Option("127.0.0.1", help="interface to bind (default: loopback only)"),
        served_model_name: str = typer.Option(None, "--served-model-name",
                                              help="the `model` name clients send (default: the --model value, as "
                                                   "vLLM does)"),
        max_logprobs: int = typer.Option(20, "--max-logprobs", help="largest top_logprobs accepted (vLLM's default)"),
        api_key_env: str = typer.Option(None, "--api-key-env", metavar="VAR",
                                        help="require `Authorization: Bearer <key>` with the key read from this "
                                             "environment variable (required for a --host beyond loopback unless "
                                             "--insecure)"),
        insecure: bool = typer.Option(False, "--insecure", help="allow a --host beyond loopback without an API key "
                                                                "(anyone who reaches the port may use it)"),
        device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
        dtype: Dtype = typer.Option(None,
                                  help="weight dtype (default: float32 on CPU, the checkpoint's own on GPU)"),
    ) -> None:
        invoke("serve-judge", handle, model=model, port=port, host=host, served_model_name=served_model_name,
               max_logprobs=max_logprobs, api_key_env=api_key_env, insecure=insecure, device=device, dtype=dtype and dtype.value)


def handle(args: argparse.Namespace) -> int:
    from flows.cli import UserError

    if not Path(args.model).is_dir():
        raise UserError(f"--model {args.model}: not a folder")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1..65535")
    if args.max_logprobs < 0:
        raise UserError("--max-logprobs must be >= 0")
    api_key = None
    if args.api_key_env:
        from tasks.secret_values import check_secret

        try:
            api_key = check_secret(os.environ.get(args.api_key_env), f"--api-key-env {args.api_key_env}: the variable")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    try:
        check_bind(args.host, api_key is not None, args.insecure)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    import uvicorn

    from tasks.config import ModelRef
    from tasks.vote.judges.server import create_app
    from tasks.vote.judges.transformers_backend import TransformersJudge

    options = {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v}
    judge = TransformersJudge(ModelRef(backend="transformers", name=args.model, options=options))
    name = args.served_model_name or args.model
    app = create_app(judge, served_model_name=name, max_logprobs=args.max_logprobs, api_key=api_key)
    print(f"serve-judge: {name} on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1); `0.0.0.0`, `::` and any name are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_bind(host: str, has_key: bool, insecure: bool) -> None:
    """Refuse serving beyond loopback without a key, unless the user said `--insecure`."""
    if is_loopback(host) or has_key:
        return
    if not insecure:
        raise ValueError(
            f"--host {host} serves every machine that can reach it, and no API key is set: give "
            "--api-key-env VAR (clients send `Authorization: Bearer <key>`), or --insecure to serve without one"
        )
    import sys

    print(f"serve-judge: warning: serving on {host} without an API key (--insecure)", file=sys.stderr, flush=True)
