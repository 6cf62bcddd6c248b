"""Majority voting of a judge panel, with the cascade, the answer cache and the votes shards.

Outcomes. Each judge's answer to a pair becomes one outcome code at a threshold T:
`YES` (p_real >= T), `NO`, `ABSTAIN` (a final abstention: the model answered with no yes/no mass),
`RETRY` (a transient abstention: timeout, connection error, HTTP 5xx, unreadable file) or `SKIPPED`
(not asked). With n judges a decision needs `need = n // 2 + 1` agreeing votes (2 of 3).

`tally` decides one pair: accepted when yes >= need, rejected when no >= need; otherwise
`undecided` when the RETRY and SKIPPED judges could still make a majority
(max(yes, no) + retry + skipped >= need), else `judge_error` (too few valid votes, for good).

Cascade (`vote.cascade`, on by default). Judges are asked in panel order, one round per judge over
every pair still open: a pair stops as soon as `tally` is not `undecided` (decided, or a
`judge_error` that the remaining judges cannot change). It never stops while a judge could flip
`undecided` into a decision, so its verdict equals the verdict of asking everyone: a decision can
only be `need` agreeing votes, which later votes cannot outnumber (need > n/2), and a
`judge_error` is already certain. `tests/test_voting.py` checks this for every pattern of
outcomes of 1 to 5 judges. With three judges the first two are always asked; the third only when
they disagree or one abstained, so calls per pair = 2 + P(first two do not agree).

Thresholds and the cascade. Stages write scores and `select` applies thresholds, so each votes row
keeps `p_real` and the error text; `vote` is `p_real >= T` for the T the stage ran with. But which
judges the cascade asked depends on T: at T=0.5 answers 0.6 and 0.7 agree and the third judge is
skipped; at X=0.65 they disagree and the skipped judge would decide. Hence:
  - every votes shard records its `VoteMeta` (panel in order, T, cascade, prompt version) in its
    Parquet metadata (`unirain.vote`), atomically with the rows;
  - `select --threshold X` re-cuts from the stored p_real (no model call). A pair whose verdict at
    X needs a judge the cascade skipped is reported (`needs_skipped_judge` in select's counts and
    reports) and rejected as `undecided` at stage `select`, never guessed;
  - the stage fingerprint (`VoteStage`) covers the panel, T, the cascade and the prompt version: a
    shard voted otherwise is redone by the runner (`tasks.stage`), and the cache answers every
    question already asked, so only the skipped judges are called. With the cascade off every judge
    is asked and any X re-cuts completely.

Faults. The judge backends turn timeouts, retries and bad answers into abstentions (`vote` null,
error kept). A pair left `undecided` by transient failures is not written to the votes manifest
but as an `undecided` reject of stage `vote`, and its shard is not done: the next run redoes the
shard, where the cache answers everything that was answered and only the failures are asked again.

Cache. Questions are batched per judge in chunks of `vote.chunk_size` (the backends keep
`max_concurrency` requests in flight or batch in-process); each chunk's final answers are committed
to `tasks.vote.judge_cache.JudgeCache` before the next, so `kill -9` loses at most one chunk per judge.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_manifests import ManifestError, RunLayout, get_schema, read_manifest
from data_manifests.reader import check_file_schema
from tasks.config import ModelRef, VoteConfig
from tasks.vote.judge_cache import JudgeCache, is_final_error
from tasks.vote.judges.base import JUDGES, Judge, JudgeRequest, JudgeResult
from tasks.vote.judges.prompt import PROMPT_VERSION, prompt_version, question_version
from tasks.pipeline import spec
from tasks.stage import Stage, output_paths, stage_reject

STAGE = "vote"
OUTPUT = "votes"
META_KEY = b"unirain.vote"

# Outcome codes (int8 so a panel's outcomes for many pairs form one small matrix).
SKIPPED, NO, YES, ABSTAIN, RETRY = -1, 0, 1, 2, 3
UNDECIDED, JUDGE_ERROR = "undecided", "judge_error"


# --- tally ------------------------------------------------------------------------------------

def needed(n_judges: int) -> int:
    """Agreeing votes that decide: a strict majority of the panel (2 of 3)."""
    return n_judges // 2 + 1


def outcome(p_real: float | None, error: str | None, threshold: float, asked: bool = True) -> int:
    if not asked:
        return SKIPPED
    if p_real is not None and not (isinstance(p_real, float) and np.isnan(p_real)):
        return YES if p_real >= threshold else NO
    return ABSTAIN if is_final_error(error) else RETRY


@dataclass(frozen=True)
class Verdict:
    decision: bool | None  # True accepted, False voted out, None not decided
    reason: str | None     # None when decided, else UNDECIDED or JUDGE_ERROR
    n_yes: int
    n_votes: int           # valid votes (yes + no)


def tally(outcomes: Sequence[int]) -> Verdict:
    """The verdict of one pair from its judges' outcomes (see the module docstring)."""
    need = needed(len(outcomes))
    yes, no = outcomes.count(YES), outcomes.count(NO)
    open_ = outcomes.count(RETRY) + outcomes.count(SKIPPED)
    if yes >= need:
        return Verdict(True, None, yes, yes + no)
    if no >= need:
        return Verdict(False, None, yes, yes + no)
    return Verdict(None, UNDECIDED if max(yes, no) + open_ >= need else JUDGE_ERROR, yes, yes + no)


def ask_next(outcomes: Sequence[int]) -> bool:
    """Cascade: ask the next judge only while the verdict is undecided and someone is left to ask."""
    return SKIPPED in outcomes and tally(outcomes).reason == UNDECIDED


def tally_matrix(codes: np.ndarray) -> dict[str, np.ndarray]:
    """`tally` over a (pairs, judges) matrix of outcome codes, vectorised (select's millions of pairs).

    Returns `decision` (1 accepted, 0 voted out, -1 none), `reason` (object: None, UNDECIDED,
    JUDGE_ERROR), `n_yes`, `n_votes`.
    """
    codes = np.asarray(codes, dtype=np.int8)
    if codes.ndim != 2:
        codes = codes.reshape(len(codes), -1)
    need = needed(codes.shape[1])
    yes, no = (codes == YES).sum(1), (codes == NO).sum(1)
    open_ = ((codes == RETRY) | (codes == SKIPPED)).sum(1)
    decision = np.where(yes >= need, 1, np.where(no >= need, 0, -1)).astype(np.int8)
    reason = np.where(decision >= 0, None, np.where(np.maximum(yes, no) + open_ >= need, UNDECIDED, JUDGE_ERROR))
    return {"decision": decision, "reason": reason.astype(object), "n_yes": yes.astype(np.int32),
            "n_votes": (yes + no).astype(np.int32)}


# --- the panel --------------------------------------------------------------------------------

def judge_model_id(ref: ModelRef) -> str:
    """The id a judge built from `ref` reports (`Judge.model_id`), known without loading it."""
    return JUDGES.get(ref.backend).model_id_for(ref)


def judge_labels(model_ids: Sequence[str]) -> tuple[str, ...]:
    """Each judge's short name, used alike in `votes.judge`, reports and reject details: the folder name
    of a local checkpoint or the last part of a hub id (`judge_a`, `Qwen2-VL-7B-Instruct`) when those
    are distinct, else `judge_a`, `judge_b`, ... in panel order. The model id has its own column."""
    short = tuple(short_name(m) for m in model_ids)
    if len(set(short)) == len(short):
        return short
    return tuple(f"judge_{chr(ord('a') + i)}" if i < 26 else f"judge_{i + 1}" for i in range(len(model_ids)))


def panel_ids(refs: Sequence[ModelRef]) -> tuple[str, ...]:
    ids = tuple(judge_model_id(r) for r in refs)
    if not ids:
        raise ValueError("models.judges: no judges configured; the vote stage needs a panel (three for the paper)")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"models.judges: the same judge twice ({dupes}); give each a distinct options.model_id")
    return ids


@dataclass(frozen=True)
class VoteMeta:
    """How a votes shard was made; stored in its Parquet metadata."""

    panel: tuple[str, ...]          # model ids, in the order the cascade asks them (empty: voting off)
    threshold: float
    cascade: bool
    prompt_version: str = PROMPT_VERSION
    reference: bool = True          # False: judges saw the candidate alone (vote.reference)
    enabled: bool = True            # False: no judge was asked (vote.enabled); select keeps what retrieval passed

    @property
    def labels(self) -> tuple[str, ...]:
        return judge_labels(self.panel)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "panel": list(self.panel)})

    @classmethod
    def from_json(cls, text: str | bytes) -> "VoteMeta":
        data = json.loads(text)
        return cls(tuple(data["panel"]), float(data["threshold"]), bool(data["cascade"]), data["prompt_version"],
                   bool(data.get("reference", True)), bool(data.get("enabled", True)))



# --- asking -----------------------------------------------------------------------------------

@dataclass
class CallStats:
    """Per judge: questions needed, answered from the cache, sent to the model."""

    needed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    called: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, judge: str, needed: int, cached: int, called: int, seconds: float) -> None:
        for table, value in ((self.needed, needed), (self.cached, cached), (self.called, called), (self.seconds, seconds)):
            table[judge] = table.get(judge, 0) + value


_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _judge_lock(judge: Judge) -> threading.Lock:
    """Shard tasks in threads share a loaded judge; one batch at a time per judge keeps
    `max_concurrency` the number of requests in flight per judge and memory bounded in-process."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(judge), threading.Lock())


def request_version(req: JudgeRequest) -> str:
    """The cache key's prompt part of one question: with or without a reference, in its type's words."""
    return question_version(req.degradation, req.has_reference)


def _by_version(versions: Sequence[str], items: Sequence) -> dict[str, list]:
    groups: dict[str, list] = {}
    for version, item in zip(versions, items):
        groups.setdefault(version, []).append(item)
    return groups


def ask(judge: Judge, requests: Sequence[JudgeRequest], cfg: VoteConfig, cache: JudgeCache | None,
        stats: CallStats | None = None) -> list[JudgeResult]:
    """One judge's answers to `requests`: from the cache when asked before, else from the model in
    chunks whose final answers are cached before the next chunk is sent. Each question is cached
    under its own version (`request_version`), so one shard may mix types."""
    start = time.perf_counter()
    keys = [(r.ref_id, r.cand_id) for r in requests]
    versions = [request_version(r) for r in requests]
    out: list[JudgeResult | None] = [None] * len(requests)
    if cache is not None:
        for version, idx in _by_version(versions, range(len(requests))).items():
            found = cache.get_many(judge.model_id, version, [keys[i] for i in idx])
            for i in idx:
                out[i] = found.get(keys[i])
    missing = [i for i, r in enumerate(out) if r is None]
    for lo in range(0, len(missing), cfg.chunk_size):
        chunk = missing[lo:lo + cfg.chunk_size]
        with _judge_lock(judge):
            results = judge.judge([requests[i] for i in chunk])
        if len(results) != len(chunk):
            raise RuntimeError(f"judge {judge.model_id} returned {len(results)} results for {len(chunk)} requests")
        if cache is not None:
            answered = list(zip(chunk, results))
            for version, group in _by_version([versions[i] for i, _ in answered], answered).items():
                cache.put_many(judge.model_id, version, [(keys[i], r) for i, r in group])
        for i, r in zip(chunk, results):
            out[i] = r
    if stats is not None:
        stats.add(judge.model_id, len(requests), len(requests) - len(missing), len(missing), time.perf_counter() - start)
    return out  # type: ignore[return-value]


def run_panel(requests: Sequence[JudgeRequest], judges: Sequence[Judge], cfg: VoteConfig,
              cache: JudgeCache | None = None, stats: CallStats | None = None) -> list[list[JudgeResult | None]]:
    """Every pair's answers, one list per pair in panel order (None = skipped by the cascade).

    One round per judge over all pairs still open, so each judge gets one batch per shard."""
    answers: list[list[JudgeResult | None]] = [[None] * len(judges) for _ in requests]

    def codes(row: list[JudgeResult | None]) -> list[int]:
        return [outcome(r.p_real, r.error, cfg.threshold) if r is not None else SKIPPED for r in row]

    for j, judge in enumerate(judges):
        todo = [i for i, row in enumerate(answers) if not cfg.cascade or ask_next(codes(row))]
        if not todo:
            break
        for i, result in zip(todo, ask(judge, [requests[i] for i in todo], cfg, cache, stats)):
            answers[i][j] = result
    return answers


# --- the vote stage ---------------------------------------------------------------------------

ITEM_COLUMNS = ["pair_id", "ref_id", "ref_path", "rainy_path", "source", "rain_type"]


def vote_items(run: RunLayout, reference: bool = True) -> pd.DataFrame:
    """Every retrieved pair with the paths the judges need: the reference photo and the rainy image.
    Without references (`vote.reference: false`): every candidate no earlier stage rejected, alone."""
    if not reference:
        from tasks.screen import live_candidates

        cands = live_candidates(run, STAGE, ["pair_id", "rainy_path", "source", "rain_type"])
        return run.absolute_paths(cands, ("rainy_path",)).assign(ref_id="", ref_path=None)[ITEM_COLUMNS]
    retrieval = read_manifest(run.manifest("retrieval"), "retrieval", columns=["pair_id", "ref_id"])
    cands = run.absolute_paths(read_manifest(run.manifest("candidates"), "candidates",
                                             columns=["pair_id", "rainy_path", "source", "rain_type"]), ("rainy_path",))
    gallery = run.absolute_paths(read_manifest(run.manifest("gallery"), "gallery", columns=["image_id", "path", "source"]),
                                 ("path",)).drop(columns=["source"])
    items = retrieval.merge(cands, on="pair_id", how="left").merge(
        gallery.rename(columns={"image_id": "ref_id", "path": "ref_path"}), on="ref_id", how="left")
    for column, what in (("rainy_path", "candidates"), ("ref_path", "gallery")):
        lost = items[column].isna()
        if lost.any():
            raise ManifestError(f"{run.root}: {int(lost.sum())} retrieval rows point at ids missing from the "
                                f"{what} manifest (e.g. {items.loc[lost, 'pair_id'].iloc[0]}); redo retrieval")
    return items[ITEM_COLUMNS]


def _describe(judges: Sequence[str], row: list[JudgeResult | None], threshold: float) -> str:
    parts = []
    for name, r in zip(judges, row):
        if r is None:
            parts.append(f"{name}: skipped")
        elif r.p_real is not None:
            parts.append(f"{name}: {'yes' if r.p_real >= threshold else 'no'} ({r.p_real:.3f})")
        else:
            parts.append(f"{name}: abstained ({r.error})")
    return "; ".join(parts)


def vote_shard(items: pd.DataFrame, judges: Sequence[Judge], cfg: VoteConfig, cache: JudgeCache | None,
               stats: CallStats | None = None) -> tuple[list[dict], list[dict]]:
    """Votes rows and `undecided` rejects for one shard of `vote_items`. A row names its judge by its
    short name (`judge_labels`) in `judge` and by its model id in `judge_model`."""
    degradation = items["rain_type"] if "rain_type" in items else pd.Series(None, index=items.index, dtype=object)
    requests = [JudgeRequest(ref_id=r.ref_id or "", ref_path=r.ref_path or None, cand_id=r.pair_id,
                             cand_path=r.rainy_path, degradation=t)
                for r, t in zip(items.itertuples(index=False), degradation)]
    answers = run_panel(requests, judges, cfg, cache, stats)
    names = [j.model_id for j in judges]
    labels = judge_labels(names)
    rows, rejects = [], []
    for item, req, row in zip(items.itertuples(index=False), requests, answers):
        codes = [outcome(r.p_real, r.error, cfg.threshold) if r is not None else SKIPPED for r in row]
        if tally(codes).reason == UNDECIDED:  # transient failures left it open: retried next run
            rejects.append(stage_reject(
                item.pair_id, STAGE, UNDECIDED,
                f"no majority at threshold {cfg.threshold:g} yet, retried on the next run: "
                + _describe(labels, row, cfg.threshold),
                item.source, item.rainy_path))
            continue
        for name, label, r in zip(names, labels, row):
            if r is None:
                continue
            rows.append({"pair_id": item.pair_id, "ref_id": item.ref_id or "", "judge": label, "judge_model": name,
                         "p_real": r.p_real,
                         "vote": None if r.p_real is None else bool(r.p_real >= cfg.threshold),
                         "error": r.error, "prompt_version": request_version(req)})
    return rows, rejects


# --- votes shards with their VoteMeta ---------------------------------------------------------

def write_votes(run: RunLayout, shard: int, rows, rejects: list[dict], meta: VoteMeta, fingerprint: str = "") -> int:
    """Publish one votes shard with `meta` in its Parquet metadata (what `VoteStage` writes)."""
    from tasks.stage import write_result

    return write_result(run, OUTPUT, STAGE, shard, rows, rejects, fingerprint, {META_KEY: meta.to_json().encode()})


def read_vote_meta(path: str | Path) -> VoteMeta | None:
    try:
        check_file_schema(Path(path), get_schema(OUTPUT))
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        return VoteMeta.from_json(raw) if raw else None
    except (ManifestError, pa.ArrowException, OSError, ValueError, KeyError):
        return None


def holds_retries(rejects_path: Path) -> bool:
    """A vote rejects shard with `undecided` pairs: transient failures to ask again on the next run."""
    reasons = pq.read_table(rejects_path, columns=["reason"]).column("reason")
    return bool(pc.any(pc.equal(reasons, UNDECIDED)).as_py())


def log_calls(run: RunLayout, session: str, shard: int, stats: CallStats) -> None:
    """One JSON line per shard and judge in RUN/reports/vote_calls.jsonl (model calls vs cache hits),
    appended with O_APPEND so shard tasks in several processes can share the file."""
    run.reports.mkdir(parents=True, exist_ok=True)
    lines = "".join(
        json.dumps({"session": session, "shard": shard, "judge": judge, "needed": stats.needed[judge],
                    "cached": stats.cached[judge], "called": stats.called[judge],
                    "seconds": round(stats.seconds[judge], 3)}) + "\n"
        for judge in stats.needed)
    if lines:
        with open(run.reports / "vote_calls.jsonl", "a") as fh:
            fh.write(lines)


def read_calls(run: RunLayout, session: str | None = None) -> pd.DataFrame:
    path = run.reports / "vote_calls.jsonl"
    columns = ["session", "shard", "judge", "needed", "cached", "called", "seconds"]
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    frame = pd.read_json(path, lines=True, dtype={"session": str})
    if frame.empty:
        return pd.DataFrame(columns=columns)
    return frame[frame["session"] == session] if session is not None else frame


def short_name(model_id: str) -> str:
    """A judge's label in reports: the folder name of a local checkpoint, else the model id."""
    return Path(model_id).name if os.sep in model_id and Path(model_id).name else model_id


class VoteStage(Stage):
    """The judge panel (`models.judges`, three) votes on every retrieved pair, through the cache.

    The paper's data ablations (`configs/ablations/`): `vote.reference: false` asks the panel about
    each candidate alone (no retrieval row needed); `vote.enabled: false` loads and asks no judge and
    writes empty votes shards whose metadata says so, and select keeps what passed retrieval."""

    spec = spec("vote")
    upstream = ("retrieve",)
    CODE_VERSION = 2  # 2: votes.judge is the short name, the model id is votes.judge_model

    def __init__(self, cfg, num_shards: int):
        super().__init__(cfg, num_shards)
        self.session = os.urandom(8).hex()  # groups this run's lines in reports/vote_calls.jsonl

    @property
    def enabled(self) -> bool:
        return self.cfg.vote.enabled

    @property
    def prompt_version(self) -> str:
        return prompt_version(self.cfg.vote.reference)

    def refs(self) -> list[ModelRef]:
        if not self.enabled:
            return []
        judges = self.cfg.models.judges
        if len(judges) != 3:
            raise ValueError(f"models.judges: majority voting needs exactly three judges, the config has {len(judges)}")
        from tasks.config import require_local_model
        from tasks.vote.judges import JUDGES

        for i, ref in enumerate(judges):  # a missing or wrong-kind local judge fails before any stage
            require_local_model(ref, f"models.judges[{i}]", JUDGES.get(ref.backend))
        return judges

    def meta(self) -> VoteMeta:
        panel = panel_ids(self.refs()) if self.enabled else ()
        return VoteMeta(panel, self.cfg.vote.threshold, self.cfg.vote.cascade, self.prompt_version,
                        self.cfg.vote.reference, self.enabled)

    def config_section(self) -> dict:
        if not self.enabled:
            return {"vote.enabled": False}
        return {"vote.enabled": True, "vote.reference": self.cfg.vote.reference, "vote.threshold": self.cfg.vote.threshold,
                "vote.cascade": self.cfg.vote.cascade, "prompt_version": self.prompt_version}

    def model_id(self) -> str | None:
        return ", ".join(panel_ids(self.refs())) if self.enabled else None

    def setup_key(self) -> str:
        from tasks.stage import digest

        return digest(["vote", [r.model_dump(mode="json") for r in self.refs()], self.cfg.vote.model_dump(mode="json")])

    def check(self, run: RunLayout) -> None:
        """Every judge loads and answers before anything is touched; an unreachable one is named."""
        if not self.enabled:
            return
        import copy

        from tasks.vote.judges import JudgeUnavailable
        from tasks.stage import ready

        loaded = ready(copy.copy(self))  # a copy: this object goes to the shard tasks (Dask pickles it) model-free
        for i, judge in enumerate(loaded.panel, 1):
            try:
                judge.check()
            except JudgeUnavailable as exc:
                raise JudgeUnavailable(f"vote: judge {i} of {len(loaded.panel)} ({judge.model_id}): {exc}") from None
            if judge.model_id not in self.meta().panel:
                raise RuntimeError(f"judge {judge.model_id!r} does not report the id its config implies")

    def items(self, run: RunLayout) -> pd.DataFrame:
        if not self.enabled:
            return pd.DataFrame(columns=ITEM_COLUMNS)
        return vote_items(run, self.cfg.vote.reference)

    def setup(self) -> None:
        from tasks.vote.judges import make_judge

        self.panel = [make_judge(ref, self.cfg.vote) for ref in self.refs()]

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        if not self.enabled or rows.empty:
            return [], [], {"model_calls": 0, "cache_hits": 0, "questions": 0}
        stats = CallStats()
        with JudgeCache(run) as cache:
            kept, rejects = vote_shard(rows, self.panel, self.cfg.vote, cache, stats)
        log_calls(run, self.session, shard, stats)
        return kept, rejects, {"model_calls": sum(stats.called.values()), "cache_hits": sum(stats.cached.values()),
                               "questions": sum(stats.needed.values())}

    def shard_metadata(self) -> dict[bytes, bytes]:
        return {META_KEY: self.meta().to_json().encode()}

    def shard_redo_reason(self, run: RunLayout, shard: int) -> str | None:
        _, rejects = output_paths(run, OUTPUT, STAGE, shard)
        return "pairs to retry" if holds_retries(rejects) else None
