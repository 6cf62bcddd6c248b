"""`unirain models make-tiny`: build tiny random-weight models for the demo and the tests."""
import typer

from ..cli import CONTEXT, invoke


def register(app: typer.Typer) -> None:
    models = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, help="model utilities (tiny offline models)")
    app.add_typer(models, name="models")

    @models.command(
        "make-tiny",
        short_help="build tiny random-weight models (open_clip ViT, BLIP, VLM judges) and DIR/config.yaml",
        help="Build tiny RANDOM-WEIGHT models of the real architectures into DIR, saved with the "
             "libraries' own savers, plus DIR/config.yaml, a run config pointing at them. Their outputs "
             "are meaningless: for the demo and the tests only. Nothing is downloaded.")
    def make_tiny_command(
        out: str = typer.Option(..., metavar="DIR", help="output folder (created if missing)"),
        seed: int = typer.Option(0, help="weight seed"),
        base_config: str = typer.Option(None, "--base-config", metavar="YAML",
                                        help="run config whose settings the written config keeps (its models: are "
                                             "replaced)"),
    ) -> None:
        invoke("models make-tiny", make_tiny, out=out, seed=seed, base_config=base_config)


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
