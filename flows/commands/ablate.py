"""`unirain ablate`: train model variants on one run's data with one recipe and tabulate them."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "ablate", help="train model variants (unirain, unirain-soft-soft, ...) alike and write one PSNR/SSIM table",
        description="Each variant (a config under configs/model/ or a YAML path) trains with the train: section of "
                    "--config in RUN/ablation/<variant>/ and is scored per rain type; the table (with the input's "
                    "own scores as the first row) goes to RUN/reports/ablation.{csv,md} and a Prefect artifact. "
                    "Rerunning resumes: a finished variant is not retrained.")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--variants", required=True, help="comma-separated model configs, e.g. unirain,unirain-soft-soft")
    p.add_argument("--config", default="configs/paper.yaml", help="run config whose train: section is the recipe "
                                                                  "(default configs/paper.yaml)")
    p.add_argument("--manifest", help="training pairs (default: RUN/manifests/distilled, else candidates)")
    p.add_argument("--iters", type=int, help="total iterations per variant (overrides train.iters)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="test folder (paper layout); repeatable")
    p.add_argument("--test-manifest", action="append", default=[], metavar="M", help="test manifest; repeatable")
    p.set_defaults(func=run, writes_run=True)


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
