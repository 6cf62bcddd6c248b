"""`unirain train`, `unirain evaluate` and `unirain derain`: the derainer's commands."""
from __future__ import annotations

import os
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train (or resume) the MoE derainer on a run's distilled or candidate pairs",
        description="Train the derainer with the train: section of a run config. Rerunning the same command "
                    "resumes from RUN/checkpoints/latest.json and stops at the same total iteration. Under "
                    "torchrun (WORLD_SIZE > 1) every process runs this command and DDP is used.")
    p.add_argument("--config", required=True, help="run config YAML (its train: section)")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run folder: checkpoints/, reports/, tensorboard/ go here (spell it --run-dir under "
                        "torchrun, whose own --run-path option makes --run ambiguous)")
    p.add_argument("--manifest", help="training pairs: a manifest folder or a folder in the paper layout "
                                      "(default: RUN/manifests/distilled, else RUN/manifests/candidates)")
    p.add_argument("--iters", type=int, help="total iterations (overrides train.iters)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides train.device)")
    p.set_defaults(func=run_train, writes_run=True)

    e = sub.add_parser(
        "evaluate", help="PSNR/SSIM of a checkpoint per test set and rain type, beside the rainy input's own",
        description="Score the model and the rainy input itself (the 'doing nothing' baseline) against the targets, "
                    "with the gain (model - input). basicsr protocol: whole images (reflect-padded, never cropped), "
                    "RGB and Y; released: the authors' test.py (crop to multiples of 16, scikit-image SSIM). Writes "
                    "OUT.csv, OUT.json, OUT.images.csv, OUT.md and before/after grids OUT_grids/<set>/<type>.png, "
                    "and prints the table.")
    e.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint, a checkpoints folder or a run folder")
    e.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="test folder in the paper layout {drs,drd,nrs,nrd}/{input,target}; repeatable")
    e.add_argument("--manifest", action="append", default=[], metavar="M", help="test manifest folder; repeatable")
    e.add_argument("--out", help="report path (default: the checkpoint's RUN/reports/evaluation)")
    e.add_argument("--device", default="auto")
    e.add_argument("--crop-border", type=int, default=0)
    e.add_argument("--tile", type=int, help="tile size for very large images (default: whole images)")
    e.add_argument("--tile-overlap", type=int, default=32)
    e.add_argument("--save-images", metavar="DIR", help="also write the derained test images here")
    e.add_argument("--protocol", choices=("basicsr", "released"), default="basicsr",
                   help="basicsr: BasicSR PSNR/SSIM (11x11 Gaussian) on RGB and Y; released: the authors' test.py "
                        "(centre crop to a multiple of 16, scikit-image SSIM 7x7 uniform on RGB). Default basicsr")
    e.add_argument("--grid-images", type=int, default=3, metavar="N",
                   help="images per rain type in the before/after grids (input | output | target); 0 = none")
    from ..run_guard import run_of_report

    e.set_defaults(func=run_evaluate, writes_run=run_of_report)

    d = sub.add_parser(
        "derain", help="derain an image or a folder of images with a checkpoint",
        description="Outputs have the input's size. Large images go through overlapping tiles blended without "
                    "seams. A bad image is reported and skipped (exit status 1), the rest are written.")
    d.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint, a checkpoints folder or a run folder")
    d.add_argument("input", help="an image file or a folder (searched recursively)")
    d.add_argument("output", help="output file (for a file input) or folder (PNG, same relative names)")
    d.add_argument("--tile", type=int, default=256, help="tile size; 0 = whole images (default 256)")
    d.add_argument("--tile-overlap", type=int, default=32)
    d.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=run_derain)


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
            result = train(cfg, args.run, training_data(args.run, args.manifest))
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"train: iteration {result.iteration}/{cfg.iters}, checkpoint {result.checkpoint}")
            return 0
        from unirain_model.checkpoint import check_resumable
        from unirain_model.config import load_train_config, model_config
        from unirain_model.data import check_source

        from ..train import train_flow, training_data

        # Refuse bad input here, before a flow run starts (and logs a traceback for it).
        model_config(load_train_config(args.config, iters=args.iters, device=args.device))
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
