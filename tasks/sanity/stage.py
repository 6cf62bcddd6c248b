"""The `sanity` stage: model-free checks that each candidate pair is one scene, aligned, sharp, of the
same colours, and rainy at all (`tasks.sanity.checks`).

Where it lives and why: after ingest and the leak check, before any model. It is per-pair, cheap (a
few small-image operations per pair on views that leak_check made when it decoded the images,
`tasks.sanity.view_cache`; two decodes per pair where it has none) and shards like the model stages;
a pair it rejects is never captioned, embedded or judged (`tasks.screen.live_candidates`). Its fingerprint holds the
`sanity:` section (every check's on/off and threshold) and the code version.

Per pair it writes a `sanity` row with every score (whether or not its check is on, so thresholds can
be re-cut from the manifest), the first failed check (in `checks.ORDER`) as `reason`, and `passed`.
A failed pair also gets a reject with that reason and a detail naming every failed score. With every
check off it passes every pair without decoding anything. `finish` draws RUN/reports/sanity_rejects.png:
a few rejected pairs per reason (input | target | score).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_manifests import RunLayout, read_manifest, shard_files
from tasks.imageio import ImageRejected
from tasks.pipeline import previous_stage, spec
from tasks.screen import live_candidates
from tasks.stage import Stage, read_state, stage_reject

from .checks import CHECKS, ORDER
from .view_cache import ViewReader, shard_path
from .views import View, load_view

STAGE = "sanity"
SCORE_COLUMNS = [CHECKS.get(n).column for n in ORDER]
OUTPUT_COLUMNS = ["pair_id", *SCORE_COLUMNS, "reason", "passed"]
GRID_NAME = "sanity_rejects.png"


def enabled_checks(section) -> dict[str, float]:
    """{check name: threshold} of the checks that are on, in `ORDER`."""
    return {n: getattr(section, n).threshold for n in ORDER if getattr(section, n).enabled}


def decide(scores: dict[str, float], thresholds: dict[str, float], rain_type: str | None = None) -> list[tuple[str, str]]:
    """[(reason, detail)] of every failed check that is on, in `ORDER` (empty: the pair passes)."""
    failed = []
    for name, threshold in thresholds.items():
        check = CHECKS.get(name)
        value = scores.get(check.column)
        if check.failed(value, threshold, rain_type):
            failed.append((name, check.detail(value, threshold)))
    return failed


def check_rows(rows: pd.DataFrame, thresholds: dict[str, float], min_side: int = 1,
               cached: ViewReader | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """(`sanity` rows, rejects) for candidate rows with absolute `rainy_path`/`clean_path`; pairs under
    `min_side` pixels on a side are scored, never rejected. `cached`: views an earlier stage made,
    looked up by the rows' `rainy_id`/`clean_id` (an image not there is decoded)."""
    out, rejects = [], []
    for r in rows.itertuples(index=False):
        try:
            rainy = pair_view(r.rainy_path, getattr(r, "rainy_id", None), cached)
            target = pair_view(r.clean_path, getattr(r, "clean_id", None), cached)
        except ImageRejected as exc:
            rejects.append(stage_reject(r.pair_id, STAGE, exc.reason, exc.detail, r.source, r.rainy_path))
            continue
        if rainy.mid.shape != target.mid.shape:
            rejects.append(stage_reject(r.pair_id, STAGE, "size_mismatch",
                                        f"input {rainy.size[0]}x{rainy.size[1]} vs target {target.size[0]}x{target.size[1]} "
                                        "as displayed (EXIF orientation)", r.source, r.rainy_path))
            continue
        scores = {CHECKS.get(n).column: CHECKS.get(n).score(rainy, target) for n in ORDER}
        judged = min(rainy.size) >= min_side
        failed = decide(scores, thresholds, getattr(r, "rain_type", None)) if judged else []
        out.append({"pair_id": r.pair_id, **scores, "reason": failed[0][0] if failed else None, "passed": not failed})
        if failed:
            rejects.append(stage_reject(r.pair_id, STAGE, failed[0][0], "; ".join(d for _, d in failed),
                                        r.source, r.rainy_path))
    frame = pd.DataFrame(out, columns=OUTPUT_COLUMNS)
    frame[SCORE_COLUMNS] = frame[SCORE_COLUMNS].astype(np.float32)
    return frame.assign(passed=frame["passed"].astype(bool)), rejects


def pair_view(path: str, image_id: str | None, cached: ViewReader | None) -> View:
    view = cached.get(image_id) if cached is not None and image_id is not None else None
    return view if view is not None else load_view(path)


def pass_all(rows: pd.DataFrame) -> pd.DataFrame:
    """Every check off: every pair passes, no scores, nothing decoded."""
    return pd.DataFrame({"pair_id": rows["pair_id"].to_numpy(), **{c: np.float32(np.nan) for c in SCORE_COLUMNS},
                         "reason": None, "passed": True}, columns=OUTPUT_COLUMNS)


class SanityStage(Stage):
    """Candidates failing a sanity check -> a reject with the check's name as reason."""

    spec = spec(STAGE)
    upstream = (previous_stage(STAGE),)
    CODE_VERSION = 2  # 2: jpeg_target; color_shift compares the channels' lines where the pixels are

    def thresholds(self) -> dict[str, float]:
        return enabled_checks(self.cfg.sanity)

    def config_section(self) -> dict:
        section = self.cfg.sanity
        checks = {f"sanity.{n}": getattr(section, n).threshold if getattr(section, n).enabled else "off" for n in ORDER}
        return {"sanity.min_side": section.min_side, **checks}

    def items(self, run: RunLayout) -> pd.DataFrame:
        cands = live_candidates(run, STAGE, ["pair_id", "source", "rain_type", "rainy_path", "clean_path",
                                             "rainy_id", "clean_id"])
        return run.absolute_paths(cands, ("rainy_path", "clean_path"))

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        """Views from leak_check's hand-off file where it has them (then the file goes: it is read once,
        `tasks.sanity.view_cache`), decoded otherwise."""
        thresholds = self.thresholds()
        handoff = shard_path(run, shard)
        if not thresholds or rows.empty:
            handoff.unlink(missing_ok=True)
            return pass_all(rows), [], {"sanity_rejects": 0, "views_cached": 0, "views_decoded": 0}
        with ViewReader(handoff) as cached:
            out, rejects = check_rows(rows, thresholds, self.cfg.sanity.min_side, cached)
        handoff.unlink(missing_ok=True)
        return out, rejects, {"sanity_rejects": int((~out["passed"]).sum()), "views_cached": cached.hits,
                              "views_decoded": cached.misses}

    def finish(self, run: RunLayout, redone: list[int], totals: dict) -> dict:
        """Redraw the reject grid after any redo, or when it is gone while the run has rejects; an
        unchanged rerun reads no manifest here (the reject count rides along in the stage's state)."""
        from .report import write_reject_grid

        grid = run.reports / GRID_NAME
        if redone:
            write_reject_grid(run, grid)
            return {}
        previous = int(((read_state(run, STAGE) or {}).get("last") or {}).get("sanity_rejects", 0))
        if previous and not grid.exists():
            write_reject_grid(run, grid)
        return {"sanity_rejects": previous}


def sanity_rejects(run: RunLayout) -> pd.DataFrame:
    """The run's sanity rejects joined with their scores and absolute paths (for the grid, `inspect`)."""
    if not shard_files(run.manifest(STAGE)):
        return pd.DataFrame(columns=[*OUTPUT_COLUMNS, "rainy_path", "clean_path"])
    scores = read_manifest(run.manifest(STAGE), STAGE)
    failed = scores[~scores["passed"]]
    cands = run.absolute_paths(read_manifest(run.manifest("candidates"), "candidates",
                                             columns=["pair_id", "source", "rainy_path", "clean_path"]),
                               ("rainy_path", "clean_path"))
    return failed.merge(cands, on="pair_id", how="left").sort_values(["reason", "pair_id"]).reset_index(drop=True)
