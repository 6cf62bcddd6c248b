"""The stage contract and the one runner every stage goes through.

A `Stage` (after NeMo Curator's ProcessingStage and DataTrove's pipeline steps) declares:
  - its name, output manifest and key column (`tasks.pipeline.StageSpec`), the upstream stages it
    reads, and its output schema;
  - `fingerprint_payload()`: everything that changes its output (the config keys it reads, its
    model id, the run's shard count, `CODE_VERSION`, and the *generations* of its upstream stages);
  - `setup()`: load models once per worker process (`ready()` keeps one set-up stage per process);
  - `process_shard(run, shard, rows) -> (rows, rejects[, counters])` for one shard of its items.
Stages whose work is global (ingest deduplicates across sources, select cuts the whole run) set
`sharded = False` and implement `process_all`; they are checked, skipped and redone by the same rules.

The runner (`run_stage`):
  - writes the stage fingerprint into every shard it publishes (output and rejects shards, Parquet
    metadata `unirain.fingerprint`), rejects first and output last, each atomically;
  - skips shards whose two files read back whole with the current fingerprint, redoes the others: a
    missing, unreadable or damaged shard is redone (never fatal) and the message names the file;
  - after redoing anything, gives the stage a new *generation* (RUN/state/<stage>.json). Later
    stages hash their upstream's generation into their fingerprint, so every later stage is stale
    by construction; their state files are also marked (`stale`) so `inspect` can say so;
  - returns a `StageReport` whose `line()` says what was skipped, what was redone and why.
Nothing here imports Prefect: `flows/stage.py` wraps `run_stage` in one generic flow and task.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import pandas as pd
import pyarrow as pa

from data_manifests import (
    FINGERPRINT_KEY, ManifestSchema, RunError, RunLayout, clean_temporaries, get_schema, read_fingerprint,
    shard_name, shard_of, write_shard,
)

from .pipeline import StageSpec, later_stages, spec


# --- rows and shards ------------------------------------------------------------------------------

def stage_reject(item_id: str, stage: str, reason: str, detail: str, source: str | None = None,
                 path: str | None = None) -> dict:
    return {"item_id": item_id, "stage": stage, "reason": reason, "detail": detail, "source": source, "path": path}


def split_shards(frame: pd.DataFrame, key: str, num_shards: int) -> list[pd.DataFrame]:
    """All shards, empty ones included, so a finished stage has every shard file."""
    if frame.empty:
        return [frame.iloc[0:0] for _ in range(num_shards)]
    shard = frame[key].map(lambda i: shard_of(i, num_shards))
    return [frame[shard == i].reset_index(drop=True) for i in range(num_shards)]


def output_paths(run: RunLayout, output: str, stage: str, shard: int) -> tuple[Path, Path]:
    return run.manifest(output) / shard_name(shard), run.rejects / shard_name(shard, f"part-{stage}")


def write_result(run: RunLayout, output: str, stage: str, shard: int, rows, rejects, fingerprint: str,
                 metadata: dict[bytes, bytes] | None = None) -> int:
    """Publish one shard: rejects first, the output last (its existence with the right fingerprint
    means the shard is done), both stamped with `fingerprint`. Returns the rows kept."""
    out, rej = output_paths(run, output, stage, shard)
    meta = {FINGERPRINT_KEY: fingerprint.encode(), **(metadata or {})}
    rejects_schema = get_schema("rejects")
    if not isinstance(rejects, pd.DataFrame):
        rejects = pd.DataFrame(list(rejects), columns=rejects_schema.columns)
    write_shard(rejects, rej.parent, rej.name, rejects_schema, metadata={FINGERPRINT_KEY: fingerprint.encode()})
    if not isinstance(rows, (pd.DataFrame, pa.Table)):
        rows = pd.DataFrame(list(rows), columns=get_schema(output).columns)
    write_shard(rows, out.parent, out.name, get_schema(output), metadata=meta)
    return len(rows)


def digest(payload: Any) -> str:
    return hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


# --- the contract ---------------------------------------------------------------------------------

class Stage:
    """Subclasses set `spec` (from `tasks.pipeline`), `upstream` and `CODE_VERSION`, and implement
    `config_section`, `items` and `process_shard` (or `process_all` with `sharded = False`)."""

    spec: ClassVar[StageSpec]
    upstream: ClassVar[tuple[str, ...]] = ()   # stages whose outputs it reads
    CODE_VERSION: ClassVar[int] = 1             # bump when the stage's logic changes its output
    sharded: ClassVar[bool] = True

    def __init__(self, cfg, num_shards: int):
        self.cfg = cfg                  # a tasks.config.RunConfig
        self.num_shards = num_shards    # the run's (RunLayout.resolve_num_shards)

    # declared facts
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def output(self) -> str:
        return self.spec.output

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def output_schema(self) -> ManifestSchema:
        return get_schema(self.output)

    # what changes the output
    def config_section(self) -> dict[str, Any]:
        """The config values this stage's output depends on (not batch sizes or worker counts)."""
        return {}

    def model_id(self) -> str | None:
        """The model's stable id, known without loading it."""
        return None

    def fingerprint_payload(self, upstream: dict[str, str]) -> dict[str, Any]:
        return {"stage": self.name, "code": self.CODE_VERSION, "num_shards": self.num_shards,
                "config": self.config_section(), "model": self.model_id(),
                "upstream": {name: upstream.get(name) for name in self.upstream}}

    # the work
    def check(self, run: RunLayout) -> None:
        """Fail fast, before any shard is touched, when there is work to do (e.g. a judge is down)."""

    def items(self, run: RunLayout) -> pd.DataFrame:
        """Everything the stage processes, one row per item, cut into shards by `key`."""
        raise NotImplementedError

    def setup(self) -> None:
        """Load models; called once per worker process (`ready`)."""

    def setup_key(self) -> str:
        """Stages with equal keys can share one set-up instance in a process."""
        return digest([type(self).__qualname__, self.cfg.model_dump(mode="json"), self.num_shards])

    def process_shard(self, run: RunLayout, shard: int, rows: pd.DataFrame):
        """-> (rows, rejects) or (rows, rejects, counters): counters are summed into the report."""
        raise NotImplementedError

    def process_all(self, run: RunLayout, fingerprint: str, submit: Callable) -> dict[str, Any]:
        """Unsharded stages: do the whole stage, publishing every shard with `write_result`."""
        raise NotImplementedError

    def shard_metadata(self) -> dict[bytes, bytes]:
        """Extra Parquet metadata for output shards (vote: how the shard was voted)."""
        return {}

    def shard_paths(self, run: RunLayout, shard: int) -> list[tuple[Path, ManifestSchema]]:
        out, rej = output_paths(run, self.output, self.name, shard)
        return [(rej, get_schema("rejects")), (out, self.output_schema)]

    def shard_redo_reason(self, run: RunLayout, shard: int) -> str | None:
        """A reason to redo a shard whose files are current (vote: pairs left to retry)."""
        return None

    def outputs_redo_reason(self, run: RunLayout) -> str | None:
        """A reason to redo a finished unsharded stage (select: a report file is gone)."""
        return None

    def finish(self, run: RunLayout, redone: list[int], totals: dict[str, Any]) -> dict[str, Any]:
        """After the shards (every run, also when all were skipped, so keep it cheap then): indexes,
        merged outputs. `redone`: the shards redone; `totals`: their summed counters (editable)."""
        return {}


# --- one set-up stage per worker process -----------------------------------------------------------

_READY: dict[str, tuple[type, dict[str, Any]]] = {}
_READY_LOCK = threading.Lock()


def ready(stage: Stage) -> Stage:
    """`stage` with its models loaded: `setup()` runs once per process and setup key, and every later
    stage object with the same key gets those models attached (its own config stays its own, so a
    changed threshold or k never runs with a stale copy)."""
    key = stage.setup_key()
    with _READY_LOCK:
        loaded = _READY.get(key)
        if loaded is None:
            for old in [k for k, (cls, _) in _READY.items() if cls is type(stage)]:
                del _READY[old]  # another model of the same stage: free it
            before = set(vars(stage))
            stage.setup()
            loaded = _READY[key] = (type(stage), {k: v for k, v in vars(stage).items() if k not in before})
        vars(stage).update(loaded[1])
        return stage


def process_one(stage: Stage, run_dir: str, shard: int, rows: pd.DataFrame, fingerprint: str) -> dict[str, Any]:
    """One shard, end to end, in whichever worker runs it: set up, process, publish."""
    run = RunLayout.at(run_dir)
    worker = ready(stage)
    kept, rejects, *extra = worker.process_shard(run, shard, rows)
    n_rejects = len(rejects)
    n_kept = write_result(run, worker.output, worker.name, shard, kept, rejects, fingerprint, worker.shard_metadata())
    return {"kept": n_kept, "rejected": n_rejects, **(extra[0] if extra else {})}


# --- state: fingerprints and generations -----------------------------------------------------------

def state_path(run: RunLayout, name: str) -> Path:
    return run.state / f"{name}.json"


def read_state(run: RunLayout, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(run, name).read_text())
    except (OSError, ValueError):
        return None


def write_state(run: RunLayout, name: str, state: dict[str, Any]) -> None:
    run.state.mkdir(parents=True, exist_ok=True)
    path = state_path(run, name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def upstream_generations(run: RunLayout, stage: Stage) -> dict[str, str]:
    """The generation of every upstream stage; one that never finished is refused, naming it."""
    out = {}
    for name in stage.upstream:
        state = read_state(run, name)
        if not state or not state.get("generation"):
            raise RunError(f"{stage.name} needs the {name} stage of {run.root} to have finished: run "
                           f"`unirain distill --until {name}` first")
        out[name] = state["generation"]
    return out


def explain_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Why a stage's fingerprint changed, from the payloads it was computed from."""
    if not old:
        return "made with another fingerprint"
    parts = []
    if old.get("code") != new.get("code"):
        parts.append(f"code version {old.get('code')} -> {new.get('code')}")
    if old.get("model") != new.get("model"):
        parts.append(f"model {old.get('model')} -> {new.get('model')}")
    old_cfg, new_cfg = old.get("config") or {}, new.get("config") or {}
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if old_cfg.get(key) != new_cfg.get(key):
            parts.append(f"{key} {json.dumps(old_cfg.get(key), default=str)} -> {json.dumps(new_cfg.get(key), default=str)}")
    for name, gen in (new.get("upstream") or {}).items():
        if (old.get("upstream") or {}).get(name) != gen:
            parts.append(f"{name} was redone")
    if old.get("num_shards") != new.get("num_shards"):
        parts.append(f"shards {old.get('num_shards')} -> {new.get('num_shards')}")
    return "; ".join(parts[:6]) or "made with another fingerprint"


# --- the plan --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardPlan:
    shard: int
    redo: bool
    reason: str = ""   # "missing", "fingerprint", "unreadable", or a stage's own reason
    detail: str = ""


def plan_shards(run: RunLayout, stage: Stage, fingerprint: str) -> list[ShardPlan]:
    """Per shard: skip (both files whole with `fingerprint`) or redo, and why. Reads footers only."""
    plans = []
    for shard in range(stage.num_shards):
        plan = ShardPlan(shard, False)
        for path, schema in stage.shard_paths(run, shard):
            if not path.exists():
                plan = ShardPlan(shard, True, "missing", str(path))
                break
            try:
                found = read_fingerprint(path, schema)
            except Exception as exc:  # noqa: BLE001 - a damaged shard is redone, never fatal
                plan = ShardPlan(shard, True, "unreadable", f"{path}: {exc}")
                break
            if found != fingerprint:
                plan = ShardPlan(shard, True, "fingerprint", str(path))
                break
        if not plan.redo:
            reason = stage.shard_redo_reason(run, shard)
            if reason:
                plan = ShardPlan(shard, True, reason)
        plans.append(plan)
    return plans


# --- the report ------------------------------------------------------------------------------------

@dataclass
class StageReport:
    stage: str
    shards: int
    skipped: int
    redone: int
    reasons: dict[str, int] = field(default_factory=dict)
    why: str = ""                  # what changed, for fingerprint redos
    unreadable: list[str] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        if not self.redone:
            return f"{self.stage}: skipped {self.skipped} of {self.shards} shard(s), up to date ({self.seconds:.2f} s)"
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        why = f"; changed: {self.why}" if self.why and self.reasons.get("fingerprint") else ""
        bad = f"; unreadable: {'; '.join(self.unreadable[:3])}" if self.unreadable else ""
        return (f"{self.stage}: skipped {self.skipped}, redid {self.redone} of {self.shards} shard(s) "
                f"({reasons}{why}{bad}) in {self.seconds:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "shards": self.shards, "skipped": self.skipped, "redone": self.redone,
                "reasons": self.reasons, "why": self.why, "unreadable": self.unreadable,
                "seconds": round(self.seconds, 3), **self.totals}


# --- the runner ------------------------------------------------------------------------------------

def serial_submit(fn: Callable, **kwargs):
    """Run a shard now, in this thread; returns an object with `.result()` like a future."""
    value = fn(**kwargs)
    return type("Done", (), {"result": lambda self: value})()


def run_stage(stage: Stage, run: RunLayout, submit: Callable = serial_submit,
              on_progress: Callable[[int, int], None] | None = None) -> StageReport:
    """Check, skip or redo every shard of `stage` in `run`; `submit(fn, **kwargs)` returns a future
    (`serial_submit` without Prefect, a Prefect task's `.submit` inside a flow)."""
    started = time.monotonic()
    upstream = upstream_generations(run, stage)
    payload = stage.fingerprint_payload(upstream)
    fingerprint = digest(payload)
    previous = read_state(run, stage.name)
    plans = plan_shards(run, stage, fingerprint)
    todo = [p for p in plans if p.redo]
    if not stage.sharded and not todo:
        extra = stage.outputs_redo_reason(run)
        if extra:
            todo = [ShardPlan(i, True, extra) for i in range(stage.num_shards)]
    if not stage.sharded and todo:  # global work: all shards or none
        todo = [p if p.redo else ShardPlan(p.shard, True, todo[0].reason, todo[0].detail) for p in plans]
    report = StageReport(stage.name, stage.num_shards, stage.num_shards - len(todo), len(todo),
                         dict(Counter(p.reason for p in todo)),
                         explain_change((previous or {}).get("payload"), payload)
                         if any(p.reason == "fingerprint" for p in todo) else "",
                         [p.detail for p in todo if p.reason == "unreadable"])
    if todo:
        stage.check(run)
        # in progress: later stages refuse to start on a half-redone upstream, and are marked stale
        write_state(run, stage.name, {"stage": stage.name, "fingerprint": fingerprint, "payload": payload,
                                      "generation": None, "started": _now()})
        mark_later_stale(run, stage.name)
        clean_temporaries(run.manifest(stage.output))
        clean_temporaries(run.rejects)
        if stage.sharded:
            report.totals = _run_shards(stage, run, [p.shard for p in todo], fingerprint, submit, on_progress)
        else:
            report.totals = dict(stage.process_all(run, fingerprint, submit))
    report.totals.update(stage.finish(run, [p.shard for p in todo], report.totals))
    generation = (previous or {}).get("generation")
    if todo or not generation or (previous or {}).get("fingerprint") != fingerprint:
        generation = digest([fingerprint, uuid.uuid4().hex])
    report.seconds = time.monotonic() - started
    write_state(run, stage.name, {"stage": stage.name, "fingerprint": fingerprint, "payload": payload,
                                  "generation": generation, "finished": _now(), "last": report.to_dict()})
    return report


def is_current(stage: Stage, run: RunLayout) -> bool:
    """Nothing to redo: every shard carries the current fingerprint (a footer read per file). The
    parent flow checks this first and starts no sub-flow for a finished stage."""
    try:
        fingerprint = digest(stage.fingerprint_payload(upstream_generations(run, stage)))
    except RunError:
        return False  # an upstream not finished: the stage's own run says so
    if any(p.redo for p in plan_shards(run, stage, fingerprint)):
        return False
    return stage.sharded or not stage.outputs_redo_reason(run)


def _run_shards(stage: Stage, run: RunLayout, shards: list[int], fingerprint: str, submit: Callable,
                on_progress) -> dict[str, Any]:
    items = split_shards(stage.items(run), stage.key, stage.num_shards)
    futures = [submit(process_one, stage=stage, run_dir=str(run.root), shard=i, rows=items[i], fingerprint=fingerprint)
               for i in shards]
    totals: dict[str, Any] = {}
    for n, future in enumerate(futures, 1):
        for key, value in future.result().items():  # counters add up, lists (e.g. rejects) concatenate
            totals[key] = totals.get(key, [] if isinstance(value, list) else 0) + value
        if on_progress:
            on_progress(n, len(futures))
    return totals


def mark_later_stale(run: RunLayout, name: str) -> None:
    """Say in every later stage's state that its inputs changed (its fingerprint already differs)."""
    for later in later_stages(name):
        state = read_state(run, later)
        if state and not state.get("stale"):
            write_state(run, later, {**state, "stale": f"{name} redone at {_now()}"})


def stage_status(run: RunLayout) -> list[dict[str, Any]]:
    """Per stage of the pipeline: finished, stale or not run (for `inspect` and tests)."""
    from .pipeline import STAGE_ORDER

    out = []
    for name in STAGE_ORDER:
        state = read_state(run, name)
        status = "not run" if not state else ("running or failed" if not state.get("generation")
                                              else ("stale" if state.get("stale") else "done"))
        out.append({"stage": name, "status": status, "stale": (state or {}).get("stale")})
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def make_stage(name: str, cfg, num_shards: int, **extra) -> Stage:
    from .pipeline import stage_class

    return stage_class(spec(name).name)(cfg, num_shards, **extra)


def check_run(run_dir: str | os.PathLike, cfg, origin: str = "the config") -> int:
    """Refuse, before anything is written, a config that disagrees with an existing run (its shard
    count, its layout version); returns the shard count the run uses (or will record)."""
    layout = RunLayout.at(run_dir)
    if not layout.is_run():
        return cfg.ingest.num_shards
    layout.info()  # an older layout is refused with what to do
    return layout.resolve_num_shards(cfg.ingest.num_shards, cfg.num_shards_explicit, origin)


def prepare_run(run_dir: str | os.PathLike, cfg, origin: str = "the config") -> tuple[RunLayout, int]:
    """The run folder (created when new, recording the shard count) and its shard count."""
    num_shards = check_run(run_dir, cfg, origin)
    return RunLayout.at(run_dir).create(num_shards), num_shards


def preflight(cfg, num_shards: int, stages) -> None:
    """What a user can get wrong about the models, before any stage runs: each stage's model id is
    computed (a missing local model, an unknown backend or a panel that is not three judges fails here)."""
    for name in stages:
        make_stage(name, cfg, num_shards).model_id()


def check_finished(cfg, run_dir, stages) -> list[StageReport] | None:
    """The reports of `stages` when every one of them is finished and current (nothing to redo), else
    None. The CLI asks this before starting Prefect: a rerun of a finished run then costs only the
    fingerprint checks, no flow run."""
    run = RunLayout.at(run_dir)
    if not run.is_run():
        return None
    num_shards = run.num_shards
    reports = []
    for name in stages:
        started = time.monotonic()
        stage = make_stage(name, cfg, num_shards)
        if not is_current(stage, run):
            return None
        report = run_stage(stage, run)
        report.seconds = time.monotonic() - started
        reports.append(report)
    return reports
