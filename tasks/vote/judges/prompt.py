"""The judge prompt, versioned, in one place.

The vote cache is keyed by the question's version (`question_version`): change the wording and bump `PROMPT_VERSION`, or old
answers to the old question would be reused for the new one. Two questions exist:
  - with a reference (the paper's vote): a real rainy photo first, then the candidate;
  - without one (`vote.reference: false`, the paper's "VLM only (no RAG)" ablation): the candidate
    alone (`PROMPT_VERSION_NO_REFERENCE`).
Wording per degradation type: `DEGRADATION_WORDING` maps a candidate's type (its `rain_type`) to the
words the question uses; a type not in it gets the rain wording, word for word the v1 prompt. The
mapping's content is part of `prompt_version()`, so editing it re-asks the judges.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

PROMPT_VERSION = "rain-realism-v1"
PROMPT_VERSION_NO_REFERENCE = "rain-realism-noref-v1"


@dataclass(frozen=True)
class Wording:
    """How the question names a degradation: what the real photo was taken in, and what is judged."""

    weather: str = "taken in the rain"
    subject: str = "the rain"


RAIN = Wording()
# degradation type -> wording (types absent here get `RAIN`): the all-weather types' lines (issue 14)
from .degradations import WEATHER_WORDING  # noqa: E402  (a plain table: no import cycle)

DEGRADATION_WORDING: dict[str, Wording] = {k: Wording(*v) for k, v in WEATHER_WORDING.items()}


def wording(degradation: str | None = None) -> Wording:
    return DEGRADATION_WORDING.get(degradation or "", RAIN)


def prompt_text(degradation: str | None = None, reference: bool = True) -> str:
    w = wording(degradation)
    if reference:
        return (f"The first image is a real photograph {w.weather}. "
                f"Does {w.subject} in the second image look as real as {w.subject} in the first image? "
                "Answer Yes or No.")
    return (f"Does {w.subject} in this image look real, as in a real photograph {w.weather}? "
            "Answer Yes or No.")


PROMPT_TEXT = prompt_text()  # the rain question with a reference (v1)


def _digest(data) -> str:
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=4).hexdigest()


def question_version(degradation: str | None = None, reference: bool = True) -> str:
    """The version of one question, which the cache key and the votes row carry: the template's, plus
    the type and a digest of its words when the type has its own. A rain type's question stays
    `rain-realism-v1`, so answers cached before other types had words stay valid, and editing the snow
    phrase re-asks the snow questions only."""
    base = PROMPT_VERSION if reference else PROMPT_VERSION_NO_REFERENCE
    words = DEGRADATION_WORDING.get(degradation or "")
    return base if words is None else f"{base}+{degradation}:{_digest(asdict(words))}"


def prompt_version(reference: bool = True) -> str:
    """The version of the whole question set (the vote stage's fingerprint and shard metadata): the
    template's plus the wording table's digest. Editing any phrase redoes the vote shards, where the
    cache still answers every question whose own `question_version` did not change."""
    base = PROMPT_VERSION if reference else PROMPT_VERSION_NO_REFERENCE
    if not DEGRADATION_WORDING:
        return base
    return f"{base}+w{_digest({k: asdict(v) for k, v in DEGRADATION_WORDING.items()})}"


def judge_messages(reference_part: dict[str, Any] | None, candidate_part: dict[str, Any],
                   degradation: str | None = None) -> list[dict[str, Any]]:
    """One user turn: reference image (when there is one), candidate image, question.

    The reference comes first so that a server with prefix caching (vLLM) reuses it across the
    candidates retrieved for the same reference. The parts are backend-specific image parts
    (`{"type": "image"}` in-process, `{"type": "image_url", ...}` over HTTP). `degradation`: the
    candidate's type, for its wording (`DEGRADATION_WORDING`).
    """
    images = [reference_part, candidate_part] if reference_part is not None else [candidate_part]
    text = prompt_text(degradation, reference=reference_part is not None)
    return [{"role": "user", "content": [*images, {"type": "text", "text": text}]}]
