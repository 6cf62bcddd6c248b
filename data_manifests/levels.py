"""The retrieval levels, declared once.

Each level of the semantic -> visual -> SSIM retrieval writes one score column to the `retrieval`
manifest. The manifest schema, `select:`'s optional limits (`tasks.config.SelectConfig`), the cut
(`tasks.select.stage`) and the report histograms (`tasks.select.reports`) are all derived from this
tuple, so a new level is one entry here plus the code that computes its score
(`tasks.retrieve.retrieval`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RetrievalLevel:
    name: str                           # the level, as the docs call it
    score: str                          # its column in the retrieval manifest (float32)
    better: Literal["higher", "lower"]  # which way a score is better
    description: str

    @property
    def limit_key(self) -> str:
        """The `select:` option that rejects a pair whose score is worse than it."""
        return f"{'min' if self.better == 'higher' else 'max'}_{self.score}"

    def fails(self, value: float, limit: float) -> bool:
        return value < limit if self.better == "higher" else value > limit

    @property
    def fail_sign(self) -> str:
        """How a failing score compares with the limit, for reject details."""
        return "<" if self.better == "higher" else ">"


RETRIEVAL_LEVELS: tuple[RetrievalLevel, ...] = (
    RetrievalLevel("semantic", "text_l2", "lower", "L2 distance between caption-text embeddings"),
    RetrievalLevel("visual", "image_cos", "higher", "cosine between image embeddings"),
    RetrievalLevel("ssim", "ssim", "higher", "SSIM between grayscale images"),
)

SCORE_COLUMNS: tuple[str, ...] = tuple(level.score for level in RETRIEVAL_LEVELS)
