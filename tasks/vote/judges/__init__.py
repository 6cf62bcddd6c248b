"""VLM judges: interface and registry in `base`; each backend is one `*_backend.py` file."""
from tasks.vote.judges.base import (
    JUDGES,
    NO_MASS,
    REFUSED,
    Judge,
    JudgeOptions,
    JudgeRequest,
    JudgeResult,
    JudgeUnavailable,
    answer_word,
    make_judge,
    p_real_from_logprobs,
    yes_no_masses,
    yes_no_token_ids,
)
from tasks.vote.judges.prompt import PROMPT_TEXT, PROMPT_VERSION

__all__ = [
    "JUDGES", "NO_MASS", "REFUSED", "PROMPT_TEXT", "PROMPT_VERSION", "Judge", "JudgeOptions", "JudgeRequest", "JudgeResult",
    "JudgeUnavailable", "answer_word", "make_judge", "p_real_from_logprobs", "yes_no_masses", "yes_no_token_ids",
]
