"""The stage order, declared once.

`distill --until` choices, the distill flow, the funnel (`tasks.funnel`), the stage deployments
(`flows/deployments.py`, checked against `prefect.yaml` by a test) and the runner's invalidation
("every later stage") all read this tuple. Cheap to import: the CLI builds `--until` from it.
Adding a stage: one `StageSpec` here and one `Stage` subclass (see `tasks.stage`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str                                  # the stage, as users name it (`--until caption`)
    output: str                                # the manifest its shards go to
    key: str                                   # the id column its work is cut by
    stage_class: str                           # "module:Class" of its `tasks.stage.Stage`
    description: str                           # one line: CLI help, deployment description
    funnel_filter: tuple[str, str] | None = None  # row filter on `output` for the funnel's candidate count


PIPELINE: tuple[StageSpec, ...] = (
    StageSpec("ingest", "candidates", "pair_id", "tasks.ingest.stage:IngestStage",
              "Ingest the config's sources and gallery into a run folder (list, hash, probe)."),
    StageSpec("leak_check", "leak_check", "pair_id", "tasks.leak.stage:LeakCheckStage",
              "Reject candidates that copy a benchmark test image (leak_check.test_sets; perceptual hashes).",
              ("test_leak", False)),
    StageSpec("sanity", "sanity", "pair_id", "tasks.sanity.stage:SanityStage",
              "Reject pairs that are misaligned, of another scene, blurred, colour-shifted or rain-free (model-free).",
              ("passed", True)),
    StageSpec("caption", "captions", "item_id", "tasks.caption.stage:CaptionStage",
              "Caption gallery and candidate images (models.captioner).", ("kind", "candidate")),
    StageSpec("embed", "embeddings", "item_id", "tasks.embed.stage:EmbedStage",
              "Embed captions and images (models.embedder) and build the gallery indexes.", ("kind", "candidate")),
    StageSpec("retrieve", "retrieval", "pair_id", "tasks.retrieve.stage:RetrieveStage",
              "Semantic -> visual -> SSIM retrieval of each candidate's real-rain reference."),
    StageSpec("vote", "votes", "pair_id", "tasks.vote.stage:VoteStage",
              "The three-judge panel votes on every retrieved pair (cached, resumable)."),
    StageSpec("select", "distilled", "pair_id", "tasks.select.stage:SelectStage",
              "Cut the voted run into the distilled manifest (thresholds only, no model calls)."),
)

STAGE_ORDER: tuple[str, ...] = tuple(spec.name for spec in PIPELINE)
SPECS: dict[str, StageSpec] = {spec.name: spec for spec in PIPELINE}


def spec(name: str) -> StageSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_ORDER)}") from None


def stages_until(last: str) -> tuple[str, ...]:
    spec(last)
    return STAGE_ORDER[: STAGE_ORDER.index(last) + 1]


def later_stages(name: str) -> tuple[str, ...]:
    spec(name)
    return STAGE_ORDER[STAGE_ORDER.index(name) + 1:]


def previous_stage(name: str) -> str | None:
    i = STAGE_ORDER.index(spec(name).name)
    return STAGE_ORDER[i - 1] if i else None


def stage_class(name: str):
    """The Stage subclass of a stage (imported on demand: model stages pull in torch)."""
    module, _, attr = spec(name).stage_class.partition(":")
    return getattr(importlib.import_module(module), attr)
