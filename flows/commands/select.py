"""`unirain select`: re-cut a voted run at another threshold, without any model call."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "select", help="cut a voted run into distilled + rejects (no model call)",
        description="Join candidates, retrieval and votes of RUN into manifests/distilled and select rejects, "
                    "and write RUN/reports/ (funnel, votes.md, histograms). Reads stored scores only: no judge "
                    "is loaded. Pairs whose verdict at the new threshold needs a judge the cascade skipped are "
                    "reported and left undecided; rerun the vote stage at that threshold to ask them.")
    p.add_argument("--run", required=True, help="run folder (voted)")
    p.add_argument("--config", help="run config YAML (its vote.threshold, select: and ingest.num_shards apply)")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="vote = p_real >= X (default: the config's vote.threshold, else the vote stage's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..cli import UserError

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be within [0, 1], not {args.threshold:g}")
    if not (Path(args.run) / "manifests" / "votes").is_dir():
        raise UserError(f"{args.run}: no votes manifest; run `unirain distill --until vote` first")
    vote = select = ingest = None
    if args.config:
        from tasks.config import ConfigError

        from ..config import load_run_config

        try:
            cfg = load_run_config(args.config)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        vote, select, ingest = cfg.vote, cfg.select, cfg.ingest
    from data_manifests import RunLayout

    from ..select import select_flow

    try:
        counts = select_flow(run=args.run, vote=vote, select=select, threshold=args.threshold, ingest=ingest)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    layout = RunLayout.at(args.run)
    print((layout.reports / "funnel.md").read_text())
    print(f"distilled: {counts['distilled']} pairs at threshold {counts['threshold']:g} -> {layout.manifest('distilled')}")
    if counts.get("needs_skipped_judge"):
        print(f"{counts['needs_skipped_judge']} pairs need a judge the cascade skipped: rerun the vote stage "
              f"with vote.threshold: {counts['threshold']:g}")
    print(f"reports: {layout.reports}")
    return 0
