"""The stage deployments, derived from the one stage order (`tasks.pipeline`).

Every stage deployment starts the same generic flow, `flows/stage.py:stage_flow`, with its stage
name as a parameter; a run folder and a config path are the rest of the form in the UI.
`prefect.yaml` lists them (a test checks it matches `stage_deployments()`); `distill`, `train`
and `evaluate` take paths and are deployed directly.
"""
from __future__ import annotations

from tasks.pipeline import PIPELINE

STAGE_ENTRYPOINT = "flows/stage.py:stage_flow"


def stage_deployments() -> list[dict]:
    """One deployment per stage, in pipeline order, as prefect.yaml declares them."""
    return [{"name": spec.name, "entrypoint": STAGE_ENTRYPOINT, "description": spec.description,
             "parameters": {"stage": spec.name}} for spec in PIPELINE]
