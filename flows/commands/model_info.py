"""`unirain model-info --config C [--json]`: parameters, MACs at 256×256, experts per MoE layer."""
import json

import typer

from ..cli import invoke


def register(app: typer.Typer) -> None:
    @app.command(
        "model-info", short_help="parameters, MACs at 256x256 and experts per FFN layer of a derainer config",
        help="C is a model config (configs/model/*.yaml) or a run config whose train.model names one "
             "(a path, or an inline mapping). The model is built on the meta device: no weights are "
             "allocated, so the paper-sized model is counted in seconds.")
    def model_info_command(
        config: str = typer.Option(..., metavar="C", help="model YAML, or run YAML with train.model"),
        size: int = typer.Option(256, help="square input side for the MAC count"),
        json_: bool = typer.Option(False, "--json", help="print one JSON object (params, macs_256, ...)"),
    ) -> None:
        invoke("model-info", run, config=config, size=size, json=json_)


def model_info(cfg: dict, size: int = 256) -> dict:
    """The numbers `model-info` prints, for a model config mapping."""
    import torch

    from unirain_model.archs import build_model
    from unirain_model.complexity import summarize

    with torch.device("meta"):
        model = build_model(cfg)
    return {"type": cfg["type"], "config": cfg, **summarize(model, size)}


def run(args) -> int:
    from unirain_model.archs import load_model_config

    from ..cli import UserError

    if args.size < 1:
        raise UserError(f"--size must be positive, got {args.size}")
    try:
        cfg = load_model_config(args.config)
        info = model_info(cfg, args.size)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    macs_key = f"macs_{args.size}"
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"model:  {args.config} (type {info['type']})")
    print(f"params: {info['params']:,} ({info['params'] / 1e6:.2f} M)")
    print(f"MACs at {args.size}x{args.size}: {info[macs_key]:,} ({info[macs_key] / 1e9:.2f} G)")
    if not info["experts_per_layer"]:
        print("\nno mixture-of-experts layers")
        return 0
    print("\nFFN layers (experts held / experts run per pixel):")
    print(f"  {'stage':<14}{'kind':<7}{'experts':>8}{'active':>8}{'layers':>8}")
    stages: dict[tuple, int] = {}
    for row in info["experts_per_layer"]:
        # "decoders.0.2.ffn" -> "decoders.0"; "latent.3.ffn" -> "latent"
        parts = row["layer"].split(".")
        stage = ".".join(parts[:2]) if parts[1].isdigit() and parts[0] in ("encoders", "decoders") else parts[0]
        key = (stage, row["kind"], row["num_experts"], row["active_per_token"])
        stages[key] = stages.get(key, 0) + 1
    for (stage, kind, experts, active), n in stages.items():
        print(f"  {stage:<14}{kind:<7}{experts:>8}{active:>8}{n:>8}")
    return 0
