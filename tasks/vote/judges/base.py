"""The judge interface: a VLM asked whether a candidate's rain looks as real as a reference's.

A judge scores `p_real = P(yes) / (P(yes) + P(no))` from next-token probabilities, summed over
every spelling of the answer words the tokenizer has (" Yes", "Yes", "yes", "YES", ...). A
judge never raises for one bad pair: it returns an abstention (`p_real=None`, `error` set).

A backend is one file, `tasks/vote/judges/NAME_backend.py`, registering its class with
`@JUDGES.register(name)` and declaring its `options:` as `Options` (a `JudgeOptions` subclass;
unknown keys are refused at config load). `make_judge(ref, vote)` builds one from config.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from data_manifests.config_base import Section
from data_manifests.registry import Registry, package_modules
from tasks.config import ModelRef, VoteConfig
from tasks.model_options import parse_options

NO_MASS = "no yes/no mass"
# An HTTP 4xx other than 401/403/408/429: the server refuses this very request (too large, malformed,
# unsupported image...). Asking again gets the same refusal, so like NO_MASS it is a final abstention.
REFUSED = "request refused"


@dataclass(frozen=True)
class JudgeRequest:
    """One question: does the rain in `cand_path` look as real as in `ref_path` (a real photo)?

    Without a reference (`ref_path` None, `ref_id` ""; `vote.reference: false`) the question is about
    the candidate alone. `degradation`: the candidate's type, for the prompt's wording."""

    ref_id: str
    ref_path: str | None
    cand_id: str
    cand_path: str
    degradation: str | None = None

    @property
    def has_reference(self) -> bool:
        return bool(self.ref_path)


@dataclass(frozen=True)
class JudgeResult:
    """`p_real` in [0, 1], or None with `error` (an abstention, never a yes or a no).

    `p_yes`/`p_no` are the raw probability masses behind `p_real` (None when the model gave no
    answer at all: timeout, HTTP error, unreadable image).
    """

    p_real: float | None
    error: str | None = None
    p_yes: float | None = None
    p_no: float | None = None

    @property
    def ok(self) -> bool:
        return self.p_real is not None

    @classmethod
    def failed(cls, error: str) -> "JudgeResult":
        return cls(p_real=None, error=error)

    @classmethod
    def from_masses(cls, p_yes: float, p_no: float, detail: str = "") -> "JudgeResult":
        total = p_yes + p_no
        if not total > 0.0:  # also catches NaN
            return cls(p_real=None, error=NO_MASS + (f" ({detail})" if detail else ""), p_yes=p_yes, p_no=p_no)
        return cls(p_real=p_yes / total, error=None, p_yes=p_yes, p_no=p_no)


class JudgeUnavailable(RuntimeError):
    """The judge cannot work at all (server unreachable, model missing): fail the stage at start."""


class JudgeOptions(Section):
    """Options every judge backend takes; a backend's `Options` subclasses this."""

    model_id: str | None = None  # the id in vote manifests and cache keys (default: the ref's name)


class Judge(ABC):
    """A VLM judge. `model_id` names the model in vote manifests and cache keys."""

    Options: ClassVar[type[JudgeOptions]] = JudgeOptions
    model_id: str

    def __init__(self, ref: ModelRef, vote: VoteConfig | None = None):
        self.ref = ref
        self.vote = vote or VoteConfig()
        self.options = parse_options(type(self), ref.options, "", origin=f"judge {ref.name}")
        self.model_id = self.model_id_for(ref)

    @classmethod
    def model_id_for(cls, ref: ModelRef) -> str:
        """The `model_id` a judge built from `ref` reports, without building it (vote fingerprints)."""
        return str(ref.options.get("model_id") or ref.name)

    @abstractmethod
    def judge(self, pairs: list[JudgeRequest]) -> list[JudgeResult]:
        """One result per request, in order; a failure is an abstention, not an exception."""

    def check(self) -> None:
        """Raise `JudgeUnavailable` if the judge cannot answer at all (called once at stage start)."""

    def close(self) -> None:
        """Release connections or memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:  # never the options: they may name secrets
        return f"{type(self).__name__}(model_id={self.model_id!r})"


# Every `*_backend.py` module of this package registers its backend when a judge is first looked up:
# the heavy libraries they import load only then.
JUDGES: Registry[type[Judge]] = Registry("judge backend", lazy_modules=package_modules("tasks.vote.judges", "_backend"))


def make_judge(ref: ModelRef | Mapping[str, Any], vote: VoteConfig | None = None) -> Judge:
    ref = ref if isinstance(ref, ModelRef) else ModelRef.model_validate(ref)
    return JUDGES.get(ref.backend)(ref, vote)


# --- answer words -------------------------------------------------------------------------

# Word-boundary markers tokenizers put in token strings: SentencePiece "▁", byte-level BPE "Ġ"/"Ċ".
_MARKERS = "\u2581\u0120\u010a"


def answer_word(token: str) -> str | None:
    """'yes' or 'no' when `token` is a spelling of that answer (" Yes", "▁yes", "YES"), else None."""
    word = token.strip().strip(_MARKERS).strip().lower()
    return word if word in ("yes", "no") else None


def yes_no_masses(top_logprobs: Mapping[str, float] | Iterable[tuple[str, float]]) -> tuple[float, float]:
    """Sum P over the yes spellings and over the no spellings among (token, logprob) entries.

    Accepts pairs as well as a dict because servers may return the same string for two token ids
    (vLLM decodes "▁Yes" and "Yes" separately; some tokenizers decode both to "Yes"): both count.
    """
    items = top_logprobs.items() if isinstance(top_logprobs, Mapping) else top_logprobs
    p_yes = p_no = 0.0
    for token, logprob in items:
        word = answer_word(token)
        if word is None or logprob is None or math.isnan(logprob):
            continue
        if word == "yes":
            p_yes += math.exp(logprob)
        else:
            p_no += math.exp(logprob)
    return p_yes, p_no


def p_real_from_logprobs(top_logprobs: Mapping[str, float] | Iterable[tuple[str, float]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over all answer spellings; None when neither answer appears."""
    return JudgeResult.from_masses(*yes_no_masses(top_logprobs)).p_real


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Ids of every vocabulary token that spells yes / no ("Yes", "▁Yes", "ĠYes", "yes", ...).

    Real chat tokenizers have several, and which one a model emits after "ASSISTANT:" varies:
    look them up, never assume. A token string is a candidate when it reads as an answer after
    removing word-boundary markers; decoding it must confirm (a whole-vocabulary decode would be
    slow for 150k-token tokenizers).
    """
    yes: list[int] = []
    no: list[int] = []
    specials = set(getattr(tokenizer, "all_special_ids", None) or [])
    for token, idx in tokenizer.get_vocab().items():
        if idx in specials or answer_word(token) is None:
            continue
        word = answer_word(tokenizer.decode([idx]))
        if word == "yes":
            yes.append(idx)
        elif word == "no":
            no.append(idx)
    if not yes or not no:
        raise ValueError(f"tokenizer has no single-token spelling of {'yes' if not yes else 'no'}")
    return sorted(yes), sorted(no)
