"""Voting benchmark part `cascade`: judge calls per candidate with the cascade vs asking every judge.

One demo-sized run (configs/demo.yaml: 64 synthetic pairs, 32 gallery images, the three tiny LLaVA
judges) is distilled up to retrieval once; then the vote and select stages run on fresh copies of
it (no cache shared), side by side:
  - all judges asked (cascade off): 3 calls per candidate, the reference decisions;
  - the cascade in the configured panel order;
  - the cascade with the panel reordered so the two judges that agree most (measured on the
    cascade-off run) come first, as votes.md advises.
Every variant's cut (distilled pairs and each reject's reason) must equal the reference.
Calls per candidate = 2 + P(the first two judges do not settle the pair). The tiny judges have
random weights and lean in different directions, so their agreement (and the saving) is far
below what real VLM judges give; the decisions-identical column is the transferable result.

    .venv/bin/python benchmarks/bench_vote.py --parts cascade
    .venv/bin/python benchmarks/vote_cascade.py [--threshold 0.5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prepare_run(root: Path) -> tuple[Path, object]:
    """The demo's data, models and config under `root`; distilled through retrieval."""
    from flows.config import load_run_config
    from flows.demo import CONFIG, prepare
    from flows.distill import distill_flow

    out = root / "demo_run"  # configs/demo.yaml reads ../demo_run/... from its own folder
    prepare(out)
    (root / "configs").mkdir(exist_ok=True)
    config = root / "configs" / "demo.yaml"
    shutil.copy(CONFIG, config)
    run = out / "run"
    distill_flow(run=str(run), config=str(config), until="retrieve")
    return run, load_run_config(config)


def fresh_copy(run: Path, dest: Path) -> Path:
    """The run through retrieval: no votes, no cut, no cache."""
    def ignore(folder, names):
        skip = {"votes", "distilled", "cache", "reports", ".prefect", "vote.json", "select.json"}
        return [n for n in names if n in skip or n.startswith(("part-vote-", "part-select-"))]

    shutil.copytree(run, dest, ignore=ignore)
    return dest


def cut_of(run: Path) -> dict[str, str]:
    from data_manifests import read_manifest

    distilled = read_manifest(run / "manifests" / "distilled", "distilled", columns=["pair_id"])
    rejects = read_manifest(run / "manifests" / "rejects", "rejects")
    cut = {p: "distilled" for p in distilled["pair_id"]}
    later = rejects[rejects["stage"].isin(["vote", "select"])]
    cut.update(zip(later["item_id"], later["stage"] + ":" + later["reason"]))
    return cut


def bench_cascade(threshold: float | None = None) -> tuple[list[dict], dict]:
    from data_manifests import RunLayout
    from flows.stage import run_stage_flow
    from tasks.select.stage import code_matrix, load_votes
    from tasks.select.reports import agreement

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        run, cfg = prepare_run(tmp)
        setup_s = time.perf_counter() - start
        vote_cfg = cfg.vote if threshold is None else cfg.vote.model_copy(update={"threshold": threshold})
        judges = list(cfg.models.judges)

        def variant(name: str, panel, cascade: bool) -> dict:
            copy = fresh_copy(run, tmp / name)
            v = vote_cfg.model_copy(update={"cascade": cascade})
            t0 = time.perf_counter()
            run_cfg = cfg.model_copy(update={"vote": v, "models": cfg.models.model_copy(update={"judges": panel})})
            totals = run_stage_flow("vote", str(copy), run_cfg)
            seconds = time.perf_counter() - t0
            run_stage_flow("select", str(copy), run_cfg)
            cut = cut_of(copy)
            n = len(cut)  # every retrieved pair ends in exactly one place
            return {"variant": name, "order": "".join(Path(j.name).name[-1] for j in panel), "run": copy,
                    "calls": totals["model_calls"], "pairs": n, "per_pair": totals["model_calls"] / n,
                    "seconds": seconds, "cut": cut}

        rows = [variant("all judges", judges, False)]
        votes = load_votes(RunLayout.at(rows[0]["run"]))
        pairs = agreement(code_matrix(votes.rows, votes.panel, vote_cfg.threshold, votes.rows["pair_id"].unique()),
                          votes.panel)
        best = pairs.sort_values("agree_pct", ascending=False).iloc[0]
        names = {Path(j.name).name: j for j in judges}
        first = [names[best["judge"]], names[best["other"]]]
        reordered = first + [j for j in judges if j not in first]
        rows.append(variant("cascade, config order", judges, True))
        rows.append(variant("cascade, most-agreeing pair first", reordered, True))
        reference = rows[0]["cut"]
        for r in rows:
            r["identical"] = r["cut"] == reference
            r["distilled"] = sum(v == "distilled" for v in r["cut"].values())
        info = {"setup_s": setup_s, "threshold": vote_cfg.threshold, "agreement": pairs}
        return rows, info


def print_cascade(rows: list[dict], info: dict) -> None:
    from tasks.funnel import format_table

    print(f"\n## Cascade vs all judges (demo run: {rows[0]['pairs']} pairs, tiny LLaVA judges, threshold "
          f"{info['threshold']:g}, {os.cpu_count()} CPUs; set-up through retrieval {info['setup_s']:.0f} s)")
    print("| variant | panel order | judge calls | calls / candidate | vote stage s | distilled | cut identical to all judges |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['order']} | {r['calls']} | {r['per_pair']:.3f} | {r['seconds']:.1f} | "
              f"{r['distilled']} | {'yes' if r['identical'] else 'NO'} |")
    print("\nPairwise agreement of the judges (all judges asked):")
    print(format_table(info["agreement"]))


def main(argv: list[str] | None = None) -> int:
    from flows.prefect_env import configure_offline

    configure_offline()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, help="vote threshold (default: configs/demo.yaml's)")
    args = ap.parse_args(argv)
    print_cascade(*bench_cascade(args.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
