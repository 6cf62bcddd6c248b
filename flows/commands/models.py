"""`unirain models make-tiny`: build tiny random-weight models for the demo and the tests."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="model utilities (tiny offline models)")
    msub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
    t = msub.add_parser(
        "make-tiny",
        help="build tiny random-weight models (open_clip ViT, BLIP, VLM judges) and DIR/config.yaml",
        description="Build tiny RANDOM-WEIGHT models of the real architectures into DIR, saved with the "
                    "libraries' own savers, plus DIR/config.yaml, a run config pointing at them. Their outputs "
                    "are meaningless: for the demo and the tests only. Nothing is downloaded.",
    )
    t.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    t.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    t.add_argument("--base-config", metavar="YAML",
                   help="run config whose settings the written config keeps (its models: are replaced)")
    t.set_defaults(func=make_tiny)


def make_tiny(args) -> int:
    import time

    from tasks.config import ConfigError, load_yaml

    from ..cli import UserError

    try:
        base = load_yaml(args.base_config) if args.base_config else None
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    from tasks.offline.tiny_models import make_tiny_models

    start = time.perf_counter()
    try:
        config = make_tiny_models(args.out, seed=args.seed, base=base)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    models = config["models"]
    print(f"tiny models (random weights) in {args.out} ({time.perf_counter() - start:.1f} s):")
    for slot in ("captioner", "embedder"):
        if slot in models:
            print(f"  {slot:9s} {models[slot]['backend']}: {models[slot]['name']}")
    print(f"  judges    {len(models.get('judges', []))}")
    print(f"run config: {args.out}/config.yaml")
    return 0
