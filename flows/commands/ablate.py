"""`unirain ablate`: train model variants on one run's data with one recipe and tabulate them."""
import typer

from ..cli import invoke


def register(app: typer.Typer) -> None:
    @app.command(
        "ablate",
        short_help="train model variants (unirain, unirain-soft-soft, ...) alike and write one PSNR/SSIM table",
        help="Each variant (a config under configs/model/ or a YAML path) trains with the train: section of "
             "--config in RUN/ablation/<variant>/ and is scored per rain type; the table (with the input's "
             "own scores as the first row) goes to RUN/reports/ablation.{csv,md} and a Prefect artifact. "
             "Rerunning resumes: a finished variant is not retrained.")
    def ablate(
        run_: str = typer.Option(..., "--run", help="run folder"),
        variants: str = typer.Option(..., help="comma-separated model configs, e.g. unirain,unirain-soft-soft"),
        config: str = typer.Option("configs/paper.yaml", help="run config whose train: section is the recipe"),
        manifest: str = typer.Option(None, help="training pairs (default: RUN/manifests/distilled, else candidates)"),
        iters: int = typer.Option(None, help="total iterations per variant (overrides train.iters)"),
        device: str = typer.Option(None, help="auto, cpu, cuda or cuda:N"),
        data: list[str] = typer.Option([], "--data", metavar="DIR", help="test folder (paper layout); repeatable"),
        test_manifest: list[str] = typer.Option([], "--test-manifest", metavar="M", help="test manifest; repeatable"),
    ) -> None:
        invoke("ablate", run, writes_run=True, run=run_, variants=variants, config=config, manifest=manifest,
               iters=iters, device=device, data=list(data), test_manifest=list(test_manifest))


def run(args) -> int:
    from ..cli import UserError
    from .train import _user_errors

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants:
        raise UserError("--variants: give at least one model config name")
    try:
        from unirain_model.ablation import resolve_variant
        from unirain_model.config import load_train_config
        from unirain_model.data import check_source

        from ..ablate import ablate_flow
        from ..train import training_data

        # Refuse bad input before a flow run starts.
        load_train_config(args.config, iters=args.iters, device=args.device)
        for v in variants:
            resolve_variant(v)
        check_source(training_data(args.run, args.manifest))
        ablate_flow(run=args.run, variants=variants, config=args.config, manifest=args.manifest, iters=args.iters,
                    device=args.device, data=args.data or None, test_manifest=args.test_manifest or None)
    except _user_errors() as exc:
        raise UserError(str(exc)) from None
    from pathlib import Path

    reports = Path(args.run) / "reports"  # the flow's own prints go to Prefect's log, kept at WARNING
    print((reports / "ablation.md").read_text())
    print(f"reports: {reports / 'ablation.csv'}, {reports / 'ablation.md'}")
    return 0
