"""Selection: candidates + retrieval + votes -> `distilled` and `select` rejects. Thresholds apply here only.

Every candidate that no stage after ingest has rejected gets exactly one outcome:
  - `no_reference`:    no retrieval row (retrieval found no usable gallery reference; not with
                       `vote.reference: false`, where the judges saw the candidate alone);
  - `below_threshold`: a retrieval score beyond an optional minimum of `select:` (min_ssim,
                       min_image_cos, max_text_l2);
  - the votes, re-read at threshold X (`tasks.vote.stage.tally_matrix`): accepted -> `distilled`
    (all candidate columns + `ref_id`, `n_yes`, `n_votes`: yes votes and valid votes among the
    judges asked), rejected -> `voted_out`, too few valid votes for good -> `judge_error`, open ->
    `undecided` (a judge the cascade skipped at the vote stage's threshold, or a transient
    abstention, would decide; these are counted as `needs_skipped_judge` / `needs_retry`).
With `vote.enabled: false` (no judge asked: the paper's "no generation stage" ablation) every pair
left after those two is distilled with `n_yes = n_votes = 0`.
Candidates with a reject at an earlier stage after ingest (caption, embed, retrieve, vote) are not
touched: they are rejects already, and writing another would count them twice.

Exhaustiveness invariant (`exhaustiveness`): each candidate pair_id appears exactly once across the
`distilled` rows and the rejects of the stages after ingest. Ingest rejects are excluded because a
`duplicate` reject carries the id of the pair it duplicates, which is a candidate.

A cut needs no model call: `select_run` reads manifests only; rerunning it with another threshold
rewrites every `distilled` shard and `rejects/part-select-*` shard.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_manifests import RunLayout, get_schema, read_manifest, shard_files
from data_manifests.reader import check_file_schema
from tasks.config import SelectConfig
from tasks.vote.judge_cache import is_final_error
from data_manifests.levels import RETRIEVAL_LEVELS, SCORE_COLUMNS
from tasks.pipeline import spec
from tasks.stage import Stage, read_state, split_shards, write_result
from tasks.vote.stage import (
    ABSTAIN, JUDGE_ERROR, NO, RETRY, SKIPPED, UNDECIDED, YES, META_KEY, VoteMeta, tally_matrix,
)

STAGE = "select"
OUTPUT = "distilled"
REJECT_COLUMNS = ["item_id", "stage", "reason", "detail", "source", "path"]


@dataclass
class Votes:
    """The votes manifest with the VoteMeta of the shard each row came from."""

    rows: pd.DataFrame              # votes columns + `vote_threshold`
    panel: tuple[str, ...]          # the judges' short names (`votes.judge`) in panel order
    thresholds: tuple[float, ...]   # the vote stage's thresholds, one per distinct value
    cascade: bool
    models: tuple[str, ...] = ()    # their model ids (`votes.judge_model`), same order
    enabled: bool = True            # False: the vote stage asked no judge (vote.enabled: false)
    reference: bool = True          # False: the judges saw the candidate alone (vote.reference: false)


def load_votes(run: RunLayout) -> Votes:
    schema = get_schema("votes")
    frames, metas = [], []
    for path in shard_files(run.manifest("votes")):
        check_file_schema(path, schema)
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise ValueError(f"{path}: a votes shard without its vote metadata (written by an older UniRain?): "
                             "delete it and rerun the vote stage")
        meta = VoteMeta.from_json(raw)
        metas.append(meta)
        frames.append(table.select(schema.columns).to_pandas().assign(vote_threshold=meta.threshold))
    panels = {m.panel for m in metas}
    if len(panels) > 1:
        raise ValueError(f"{run.manifest('votes')}: shards voted by different judge panels {sorted(panels)}: "
                         "finish the vote stage with one panel (rerun it) before selecting")
    modes = {(m.enabled, m.reference) for m in metas}
    if len(modes) > 1:
        raise ValueError(f"{run.manifest('votes')}: shards voted with different vote.enabled / vote.reference: "
                         "finish the vote stage with one config (rerun it) before selecting")
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=schema.columns + ["vote_threshold"])
    enabled, reference = next(iter(modes), (True, True))
    first = metas[0] if metas else VoteMeta((), 0.5, False)
    return Votes(rows, first.labels, tuple(sorted({m.threshold for m in metas})),
                 all(m.cascade for m in metas) if metas else False, first.panel, enabled, reference)


def outcome_codes(votes: pd.DataFrame, threshold: float) -> np.ndarray:
    """Each votes row's outcome at `threshold` (vectorised `tasks.vote.stage.outcome`)."""
    p = votes["p_real"].astype(float).to_numpy()
    final = votes["error"].map(is_final_error).to_numpy(dtype=bool)
    return np.where(~np.isnan(p), np.where(p >= threshold, YES, NO), np.where(final, ABSTAIN, RETRY)).astype(np.int8)


def code_matrix(votes: pd.DataFrame, panel: tuple[str, ...], threshold: float, pair_ids) -> np.ndarray:
    """(pairs, judges) outcome codes in panel order; SKIPPED where a judge has no row for a pair."""
    codes = np.full((len(pair_ids), len(panel)), SKIPPED, dtype=np.int8)
    if len(votes) and len(pair_ids):
        pos = pd.Index(pair_ids).get_indexer(votes["pair_id"])
        col = pd.Index(panel).get_indexer(votes["judge"])
        keep = (pos >= 0) & (col >= 0)
        codes[pos[keep], col[keep]] = outcome_codes(votes, threshold)[keep]
    return codes


def _answer_text(votes: pd.DataFrame, threshold: float) -> pd.Series:
    """'judge_a: no (0.312)' / 'judge_b: abstained (error)' per votes row."""
    names = votes["judge"].astype(str)
    p = votes["p_real"].astype(float)
    verdict = np.where(p >= threshold, "yes", "no")
    scored = names + ": " + pd.Series(verdict, index=votes.index) + " (" + p.map("{:.3f}".format) + ")"
    return scored.where(p.notna(), names + ": abstained (" + votes["error"].fillna("") + ")")


@dataclass
class Selection:
    distilled: pd.DataFrame
    rejects: pd.DataFrame
    threshold: float
    panel: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)


def select_pairs(candidates: pd.DataFrame, rejects: pd.DataFrame, retrieval: pd.DataFrame, votes: Votes,
                 threshold: float, cfg: SelectConfig | None = None) -> Selection:
    """The cut at `threshold` (pure: frames in, frames out)."""
    cfg = cfg or SelectConfig()
    earlier = set(rejects.loc[~rejects["stage"].isin(["ingest", STAGE]), "item_id"])
    todo = candidates[~candidates["pair_id"].isin(earlier)]
    scores = retrieval[["pair_id", "ref_id", *SCORE_COLUMNS]]
    todo = todo.merge(scores, on="pair_id", how="left").reset_index(drop=True)
    out: list[pd.DataFrame] = []

    def reject(mask, reason: str, detail) -> None:
        part = todo[mask]
        if len(part):
            out.append(pd.DataFrame({"item_id": part["pair_id"], "stage": STAGE, "reason": reason,
                                     "detail": detail[mask] if isinstance(detail, pd.Series) else detail,
                                     "source": part["source"], "path": part["rainy_path"]}))

    open_ = np.ones(len(todo), dtype=bool)
    if votes.reference:
        no_ref = todo["ref_id"].isna().to_numpy()
        reject(no_ref, "no_reference", "no retrieval row: no gallery reference passed retrieval")
        open_ &= ~no_ref
    else:  # the judges saw the candidate alone: no reference is needed, none is recorded
        todo["ref_id"] = ""
    below = np.zeros(len(todo), dtype=bool)
    detail = pd.Series("", index=todo.index)
    for level in RETRIEVAL_LEVELS:  # the last level first would change no count, only the detail's wording
        column, option = level.score, level.limit_key
        limit = getattr(cfg, option) if votes.reference else None  # the config refuses limits without references
        if limit is None:
            continue
        values = todo[column].astype(float)
        fails = values.map(lambda v: level.fails(v, limit)).astype(bool)
        fails = fails.to_numpy() & open_ & ~below
        if not fails.any():  # (an empty selection maps to float64, which cannot be added to text)
            continue
        detail[fails] = f"{column} " + values[fails].map("{:.4f}".format) + f" {level.fail_sign} {option} {limit:g}"
        below |= fails
    reject(below, "below_threshold", detail)
    open_ &= ~below

    voting = todo[open_]
    if not votes.enabled:  # no generation stage: what passed retrieval (and the limits) is the result
        distilled = voting[get_schema("candidates").columns + ["ref_id"]].assign(n_yes=0, n_votes=0).reset_index(drop=True)
        select_rejects = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=REJECT_COLUMNS)
        counts = {"candidates": len(candidates), "rejected_earlier": len(candidates) - len(todo),
                  "distilled": len(distilled), **{r: int((select_rejects["reason"] == r).sum()) for r in
                                                  ("no_reference", "below_threshold", "voted_out", JUDGE_ERROR, UNDECIDED)},
                  "needs_skipped_judge": 0, "needs_retry": 0}
        return Selection(distilled, select_rejects[REJECT_COLUMNS], float(threshold), votes.panel, counts)
    rows = votes.rows[votes.rows["pair_id"].isin(set(voting["pair_id"]))]
    unvoted = ~voting["pair_id"].isin(set(rows["pair_id"]))
    if unvoted.any():
        raise ValueError(f"{int(unvoted.sum())} retrieved pairs have neither votes nor a vote-stage reject "
                         f"(e.g. {voting['pair_id'][unvoted].iloc[0]}): run the vote stage to the end first")
    codes = code_matrix(rows, votes.panel, threshold, voting["pair_id"])
    tallied = tally_matrix(codes)
    decision, reason = tallied["decision"], tallied["reason"]
    needs_skipped = (reason == UNDECIDED) & (codes == SKIPPED).any(1)
    needs_retry = (reason == UNDECIDED) & (codes == RETRY).any(1) & ~needs_skipped

    texts = _answer_text(rows, threshold).groupby(rows["pair_id"]).agg("; ".join) if len(rows) else pd.Series(dtype=str)
    summary = voting["pair_id"].map(texts).fillna("").reset_index(drop=True)
    n_yes, n_votes = pd.Series(tallied["n_yes"]), pd.Series(tallied["n_votes"])
    head = n_yes.astype(str) + " yes of " + n_votes.astype(str) + f" valid votes at threshold {threshold:g}: "
    recorded = voting["pair_id"].map(rows.groupby("pair_id")["vote_threshold"].first()).reset_index(drop=True)
    skipped_note = ("; a judge the cascade skipped at the vote stage's threshold " + recorded.map("{:g}".format)
                    + f" would decide: rerun the vote stage with vote.threshold: {threshold:g}")
    details = {
        "voted_out": head + summary,
        JUDGE_ERROR: head + summary,
        UNDECIDED: head + summary + np.where(needs_skipped, skipped_note, "; a judge that failed transiently would "
                                                                          "decide: rerun the vote stage"),
    }
    mask = np.zeros(len(todo), dtype=bool)
    where = np.flatnonzero(open_)
    for name, hit in (("voted_out", decision == 0), (JUDGE_ERROR, reason == JUDGE_ERROR), (UNDECIDED, reason == UNDECIDED)):
        mask[:] = False
        mask[where[hit]] = True
        d = pd.Series("", index=todo.index)
        d[mask] = details[name][hit].to_numpy()
        reject(mask, name, d)

    accepted = voting[decision == 1]
    distilled = accepted[get_schema("candidates").columns + ["ref_id"]].assign(
        n_yes=tallied["n_yes"][decision == 1], n_votes=tallied["n_votes"][decision == 1]).reset_index(drop=True)
    select_rejects = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=REJECT_COLUMNS)
    counts = {
        "candidates": len(candidates), "rejected_earlier": len(candidates) - len(todo), "distilled": len(distilled),
        **{r: int((select_rejects["reason"] == r).sum())
           for r in ("no_reference", "below_threshold", "voted_out", JUDGE_ERROR, UNDECIDED)},
        "needs_skipped_judge": int(needs_skipped.sum()), "needs_retry": int(needs_retry.sum()),
    }
    return Selection(distilled, select_rejects[REJECT_COLUMNS], float(threshold), votes.panel, counts)


def write_selection(run: RunLayout, sel: Selection, num_shards: int, fingerprint: str = "") -> None:
    """Rewrite every select shard (a new cut replaces the old one); shards of an older, larger
    shard count are removed so nothing of a previous cut survives."""
    distilled = split_shards(sel.distilled, "pair_id", num_shards)
    rejects = split_shards(sel.rejects, "item_id", num_shards)
    for shard in range(num_shards):
        write_result(run, OUTPUT, STAGE, shard, distilled[shard], rejects[shard], fingerprint)
    for path in shard_files(run.manifest(OUTPUT)) + shard_files(run.rejects, f"part-{STAGE}-"):
        index = path.stem.rsplit("-", 1)[-1]
        if index.isdigit() and int(index) >= num_shards:
            path.unlink()


def exhaustiveness(run: RunLayout) -> dict[str, list[str]]:
    """Candidates that appear zero times or more than once across `distilled` and the rejects of the
    stages after ingest (both lists empty when the invariant holds)."""
    ids = read_manifest(run.manifest("candidates"), "candidates", columns=["pair_id"])["pair_id"]
    distilled = read_manifest(run.manifest(OUTPUT), OUTPUT, columns=["pair_id"])["pair_id"]
    rejects = read_manifest(run.rejects, "rejects", columns=["item_id", "stage"])
    later = rejects.loc[(rejects["stage"] != "ingest") & rejects["item_id"].isin(set(ids)), "item_id"]
    seen = pd.concat([distilled, later], ignore_index=True).value_counts()
    counts = seen.reindex(ids, fill_value=0)
    return {"missing": sorted(counts.index[counts == 0]), "duplicated": sorted(counts.index[counts > 1]),
            "unknown": sorted(set(distilled) - set(ids))}


def select_run(run: RunLayout, threshold: float | None = None, cfg: SelectConfig | None = None,
               num_shards: int | None = None, fingerprint: str = "") -> tuple[Selection, Votes]:
    """Read the manifests, cut at `threshold` (default: the vote stage's), write the select shards."""
    if not shard_files(run.manifest("retrieval")):
        raise ValueError(f"{run.manifest('retrieval')} is empty: run retrieval (and voting) before select")
    votes = load_votes(run)
    if threshold is None:
        if len(votes.thresholds) != 1:
            raise ValueError(f"give a threshold: the vote stage ran with {list(votes.thresholds) or 'none'}")
        threshold = votes.thresholds[0]
    candidates = read_manifest(run.manifest("candidates"), "candidates")
    rejects = read_manifest(run.rejects, "rejects")
    retrieval = read_manifest(run.manifest("retrieval"), "retrieval", columns=["pair_id", "ref_id", *SCORE_COLUMNS])
    sel = select_pairs(candidates, rejects, retrieval, votes, threshold, cfg)
    write_selection(run, sel, num_shards or run.num_shards or 1, fingerprint)
    return sel, votes


CUT_VERSION = 3  # bump when the cut's logic changes: a rerun then recomputes instead of skipping
REPORTS = ("funnel.parquet", "funnel.md", "votes.md", "p_real.png", "retrieval_scores.png")
COUNT_KEYS = ("candidates", "rejected_earlier", "distilled", "no_reference", "below_threshold", "voted_out",
              JUDGE_ERROR, UNDECIDED, "needs_skipped_judge", "needs_retry", "threshold", "missing", "duplicated")


class SelectStage(Stage):
    """The cut: candidates + retrieval + votes -> `distilled` + select rejects + reports. No model;
    global (one cut of the whole run), so redone whole or skipped whole."""

    spec = spec("select")
    upstream = ("vote",)
    CODE_VERSION = CUT_VERSION
    sharded = False

    def __init__(self, cfg, num_shards: int, threshold: float | None = None):
        super().__init__(cfg, num_shards)
        self.threshold = cfg.vote.threshold if threshold is None else float(threshold)

    def config_section(self) -> dict:
        return {"threshold": self.threshold, "vote.enabled": self.cfg.vote.enabled, "vote.reference": self.cfg.vote.reference,
                **{f"select.{k}": v for k, v in self.cfg.select.model_dump(mode="json").items()}}

    def setup_key(self) -> str:
        return "select"

    def process_all(self, run: RunLayout, fingerprint: str, submit) -> dict:
        from tasks.select.reports import write_select_reports

        sel, votes = select_run(run, self.threshold, self.cfg.select, self.num_shards, fingerprint)
        check = exhaustiveness(run)
        sel.counts.update(threshold=sel.threshold, missing=len(check["missing"]), duplicated=len(check["duplicated"]))
        write_select_reports(run, sel, votes, self.cfg.select)
        if check["missing"] or check["duplicated"] or check["unknown"]:
            # an earlier stage dropped or double-rejected candidates: say so loudly, the cut itself is written
            print(f"select: WARNING exhaustiveness broken: {len(check['missing'])} candidates in no manifest, "
                  f"{len(check['duplicated'])} in more than one (e.g. {(check['missing'] + check['duplicated'])[:3]})")
        return dict(sel.counts)

    def outputs_redo_reason(self, run: RunLayout) -> str | None:
        lost = [name for name in REPORTS if not (run.reports / name).is_file()]
        return f"report {lost[0]} missing" if lost else None

    def finish(self, run: RunLayout, redone: list[int], totals: dict) -> dict:
        if redone:
            return {}
        last = (read_state(run, self.name) or {}).get("last") or {}
        return {k: last[k] for k in COUNT_KEYS if k in last}  # the cut on disk is this cut: its counts
