"""`unirain synth`: synthetic rainy/clean pairs in the paper's layout, or a synthetic stand-in gallery."""
import typer

from ..cli import invoke

SHORT = "synthesise degraded/clean pairs (rain: drs, drd, nrs, nrd; snow; fog) or a synthetic stand-in gallery"
DESCRIPTION = """\
Paired mode writes OUT/{drs,drd,nrs,nrd}/{input,target}/NAME.png: --per-type pairs of each
rain type (day streaks, day drops, night streaks, night drops), the same NAME in input and
target. Clean images are random crops of photos shipped in scikit-image, scikit-learn and
matplotlib, or of the images under --clean. Night pairs use the clean scene turned to night
as their target. The same seed gives the same bytes. --types picks other degradation types:
--types all adds OUT/snow and OUT/fog (all-weather), --types snow,fog only those
(docs/allweather.md).

--gallery writes N unpaired rainy images to OUT. They are SYNTHETIC, made by the same kind of
generators with different parameter ranges: a stand-in gallery for demos and tests, NOT real
rain. Real runs should ingest a gallery of real rainy photographs."""


def register(app: typer.Typer) -> None:
    @app.command("synth", help=DESCRIPTION, short_help=SHORT)
    def synth(
        out: str = typer.Option(..., help="output folder (new, or holding only a previous run's same files)"),
        per_type: int = typer.Option(None, "--per-type", help="pairs per rain type (paired mode)"),
        gallery: bool = typer.Option(False, "--gallery", help="write N unpaired SYNTHETIC rainy images (a stand-in, "
                                                              "not real rain) instead of pairs"),
        n: int = typer.Option(None, "--n", help="number of gallery images, the four rain types in turn (with --gallery)"),
        seed: int = typer.Option(0, help="random seed, >= 0"),
        clean: str = typer.Option(None, metavar="DIR", help="folder of clean photos to use instead of the built-in ones"),
        size: str = typer.Option("256x256", metavar="WxH", help="output image size"),
        types: str = typer.Option("rain", metavar="TYPES", help="degradation types, comma-separated: keys (day_streak, "
                                  "..., snow, fog), rain (the four rain types, default) or all"),
    ) -> None:
        invoke("synth", run, out=out, per_type=per_type, gallery=gallery, n=n, seed=seed, clean=clean, size=size,
               types=types)


def run(args) -> int:
    from tasks.offline.synth import parse_size, synthesize_gallery, synthesize_paired

    from ..cli import UserError

    if args.gallery:
        if args.n is None:
            raise UserError("--gallery needs --n N (the number of images)")
        if args.per_type is not None:
            raise UserError("--per-type is for paired mode; with --gallery use --n")
        count = args.n
    else:
        if args.per_type is None:
            raise UserError("give --per-type N (pairs per rain type), or --gallery --n N")
        if args.n is not None:
            raise UserError("--n is for --gallery; paired mode uses --per-type")
        count = args.per_type
    if count < 1:
        raise UserError(f"{'--n' if args.gallery else '--per-type'} must be at least 1, got {count}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        raise UserError(f"--size: {exc}") from None

    from data_manifests import TYPE_FOLDERS, resolve_types

    try:
        types = resolve_types(getattr(args, "types", None) or "rain", key="--types")
    except ValueError as exc:
        raise UserError(str(exc)) from None

    from tqdm import tqdm

    total = count if args.gallery else len(types) * count
    with tqdm(total=total, unit="img", desc="synth", disable=None) as bar:
        kw = dict(seed=args.seed, clean_dir=args.clean, size=size, on_item=lambda _: bar.update(), rain_types=types)
        try:
            items = synthesize_gallery(args.out, count, **kw) if args.gallery else synthesize_paired(args.out, count, **kw)
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            raise UserError(str(exc)) from None
    if args.gallery:
        print(f"wrote {len(items)} SYNTHETIC gallery images (a stand-in, not real rain) to {args.out}")
    else:
        print(f"wrote {len(items)} pairs ({count} per type: {', '.join(TYPE_FOLDERS[t] for t in types)}) to {args.out}")
    return 0
