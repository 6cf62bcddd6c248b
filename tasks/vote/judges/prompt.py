"""The judge prompt, versioned, in one place.

The vote cache is keyed by `PROMPT_VERSION`: change the wording and bump the version, or old
answers to the old question would be reused for the new one.
"""
from __future__ import annotations

from typing import Any

PROMPT_VERSION = "rain-realism-v1"

PROMPT_TEXT = (
    "The first image is a real photograph taken in the rain. "
    "Does the rain in the second image look as real as the rain in the first image? "
    "Answer Yes or No."
)


def judge_messages(reference_part: dict[str, Any], candidate_part: dict[str, Any]) -> list[dict[str, Any]]:
    """One user turn: reference image, candidate image, question.

    The reference comes first so that a server with prefix caching (vLLM) reuses it across the
    candidates retrieved for the same reference. The parts are backend-specific image parts
    (`{"type": "image"}` in-process, `{"type": "image_url", ...}` over HTTP).
    """
    return [
        {
            "role": "user",
            "content": [reference_part, candidate_part, {"type": "text", "text": PROMPT_TEXT}],
        }
    ]
