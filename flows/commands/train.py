"""`unirain train`, `unirain evaluate` and `unirain derain`: the derainer's commands."""
import os
import sys

import typer

from ..cli import choices, invoke

Protocol = choices("Protocol", ["basicsr", "released"])

CHECKPOINT_HELP = "a .safetensors checkpoint, a checkpoints folder or a run folder"


def register(app: typer.Typer) -> None:
    @app.command(
        "train", short_help="train (or resume) the MoE derainer on a run's distilled or candidate pairs",
        help="Train the derainer with the train: section of a run config. Rerunning the same command "
             "resumes from RUN/checkpoints/latest.json and stops at the same total iteration. Under "
             "torchrun (WORLD_SIZE > 1) every process runs this command and DDP is used.")
    def train(
        config: str = typer.Option(..., help="run config YAML (its train: section)"),
        run_: str = typer.Option(..., "--run", "--run-dir",
                                 help="run folder: checkpoints/, reports/, tensorboard/ go here (spell it --run-dir "
                                      "under torchrun, whose own --run-path option makes --run ambiguous)"),
        manifest: str = typer.Option(None, help="training pairs: a manifest folder or a folder in the paper layout "
                                                "(default: RUN/manifests/distilled, else RUN/manifests/candidates)"),
        iters: int = typer.Option(None, help="total iterations (overrides train.iters)"),
        device: str = typer.Option(None, help="auto, cpu, cuda or cuda:N (overrides train.device)"),
    ) -> None:
        invoke("train", run_train, writes_run=True, config=config, run=run_, manifest=manifest, iters=iters,
               device=device)

    from ..run_guard import run_of_report

    @app.command(
        "evaluate", short_help="PSNR/SSIM of a checkpoint per test set and rain type, beside the rainy input's own",
        help="Score the model and the rainy input itself (the 'doing nothing' baseline) against the targets, "
             "with the gain (model - input). basicsr protocol: whole images (reflect-padded, never cropped), "
             "RGB and Y; released: the authors' test.py (crop to multiples of 16, scikit-image SSIM). Writes "
             "OUT.csv, OUT.json, OUT.images.csv, OUT.md and before/after grids OUT_grids/<set>/<type>.png, "
             "and prints the table.")
    def evaluate(
        checkpoint: str = typer.Option(..., help=CHECKPOINT_HELP),
        data: list[str] = typer.Option([], "--data", metavar="DIR",
                                       help="test folder in the paper layout {drs,drd,nrs,nrd,snow,fog}/{input,target}; "
                                            "repeatable"),
        manifest: list[str] = typer.Option([], "--manifest", metavar="M", help="test manifest folder; repeatable"),
        out: str = typer.Option(None, help="report path (default: the checkpoint's RUN/reports/evaluation)"),
        device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
        crop_border: int = typer.Option(0, "--crop-border", help="pixels cut from each border before scoring"),
        tile: int = typer.Option(None, help="tile size for very large images (default: whole images)"),
        tile_overlap: int = typer.Option(32, "--tile-overlap", help="overlap between tiles, pixels"),
        save_images: str = typer.Option(None, "--save-images", metavar="DIR",
                                        help="also write the derained test images here"),
        protocol: Protocol = typer.Option("basicsr",
                                     help="basicsr: BasicSR PSNR/SSIM (11x11 Gaussian) on RGB and Y; released: the "
                                          "authors' test.py (centre crop to a multiple of 16, scikit-image SSIM 7x7 "
                                          "uniform on RGB)"),
        grid_images: int = typer.Option(3, "--grid-images", metavar="N",
                                        help="images per rain type in the before/after grids (input | output | "
                                             "target); 0 = none"),
    ) -> None:
        invoke("evaluate", run_evaluate, writes_run=run_of_report, checkpoint=checkpoint, data=list(data),
               manifest=list(manifest), out=out, device=device, crop_border=crop_border, tile=tile,
               tile_overlap=tile_overlap, save_images=save_images, protocol=protocol.value, grid_images=grid_images)

    @app.command(
        "derain", short_help="derain an image or a folder of images with a checkpoint",
        help="Outputs have the input's size. Large images go through overlapping tiles blended without "
             "seams. A bad image is reported and skipped (exit status 1), the rest are written.")
    def derain(
        input: str = typer.Argument(..., metavar="INPUT", help="an image file or a folder (searched recursively)"),
        output: str = typer.Argument(..., metavar="OUTPUT",
                                     help="output file (for a file input) or folder (PNG, same relative names)"),
        checkpoint: str = typer.Option(..., help=CHECKPOINT_HELP),
        tile: int = typer.Option(256, help="tile size; 0 = whole images"),
        tile_overlap: int = typer.Option(32, "--tile-overlap", help="overlap between tiles, pixels"),
        batch: int = typer.Option(4, help="tiles per forward pass"),
        device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    ) -> None:
        invoke("derain", run_derain, checkpoint=checkpoint, input=input, output=output, tile=tile,
               tile_overlap=tile_overlap, batch=batch, device=device)


def _user_errors():
    from unirain_model.checkpoint import CheckpointError
    from unirain_model.config import ConfigError
    from unirain_model.data import DataError

    return (ConfigError, DataError, CheckpointError, FileNotFoundError)


def run_train(args) -> int:
    from ..cli import UserError

    errors = _user_errors()
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under torchrun every rank trains; the Prefect flow (one API per process) is left out.
            from unirain_model.config import load_train_config
            from unirain_model.trainer import train

            from ..train import training_data

            cfg = load_train_config(args.config, iters=args.iters, device=args.device)
            from unirain_model.data import run_types

            result = train(cfg, args.run, training_data(args.run, args.manifest), types=run_types(args.config))
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"train: iteration {result.iteration}/{cfg.iters}, checkpoint {result.checkpoint}")
            return 0
        from unirain_model.checkpoint import check_resumable
        from unirain_model.config import load_train_config, model_config
        from unirain_model.data import check_source, run_types

        from ..train import train_flow, training_data

        # Refuse bad input here, before a flow run starts (and logs a traceback for it).
        model_config(load_train_config(args.config, iters=args.iters, device=args.device))
        run_types(args.config)  # a bad `types:` (or one too large for the CoBa floor) is refused here too
        check_source(training_data(args.run, args.manifest))
        check_resumable(os.path.join(args.run, "checkpoints"))  # all checkpoints damaged: refused here
        train_flow(run=args.run, config=args.config, manifest=args.manifest, iters=args.iters, device=args.device)
    except errors as exc:
        raise UserError(str(exc)) from None
    return 0


def run_evaluate(args) -> int:
    from ..cli import UserError

    if not args.data and not args.manifest:
        raise UserError("give at least one --data DIR or --manifest M")
    from unirain_model.checkpoint import resolve_weights
    from unirain_model.evaluation import evaluate_checkpoint, format_table, grid_folder, write_reports

    from ..evaluate import default_report_path

    if args.grid_images < 0:
        raise UserError("--grid-images must be >= 0")
    try:
        out = args.out or default_report_path(None, str(resolve_weights(args.checkpoint)))
        summary, per_image, meta = evaluate_checkpoint(
            args.checkpoint, data=args.data, manifests=args.manifest, device=args.device,
            crop_border=args.crop_border, tile=args.tile, tile_overlap=args.tile_overlap, save_dir=args.save_images,
            protocol=args.protocol, grid_dir=grid_folder(out), grid_images=args.grid_images)
    except (*_user_errors(), ValueError) as exc:
        raise UserError(str(exc)) from None
    paths = write_reports(summary, per_image, out, meta={"checkpoint": meta["path"], "iteration": meta["iteration"],
                                                         "grids": meta["grids"]})
    print(format_table(summary))
    print("reports: " + ", ".join(str(p) for p in paths))
    if meta["grids"]:
        print(f"before/after grids: {grid_folder(out)}")
    return 0


def run_derain(args) -> int:
    from ..cli import UserError

    from unirain_model.checkpoint import load_model
    from unirain_model.inference import derain_paths
    from unirain_model.trainer import resolve_device

    try:
        model, _ = load_model(args.checkpoint, resolve_device(args.device))
        written, failed = derain_paths(model, args.input, args.output, tile=args.tile or None,
                                       overlap=args.tile_overlap, batch=args.batch)
    except (*_user_errors(), ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"derain: wrote {len(written)} image(s)" + (f", skipped {len(failed)}" if failed else ""))
    for path, reason in failed:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0
