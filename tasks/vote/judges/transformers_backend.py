"""In-process judge: a `transformers` image-text-to-text model, batched with left padding.

The score comes from one forward pass: next-token logits -> softmax over the whole vocabulary ->
the mass on every yes spelling and every no spelling. `serve-judge` serves this same class over
HTTP, so an HTTP judge and an in-process judge on the same folder give the same `p_real`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from PIL import Image
from pydantic import Field

from tasks.config import ModelRef, VoteConfig
from tasks.imageio import ImageRejected, load_rgb
from tasks.model_kind import is_vision_language_judge
from tasks.vote.judges.base import JUDGES, Judge, JudgeOptions, JudgeRequest, JudgeResult, yes_no_token_ids
from tasks.vote.judges.prompt import judge_messages

if TYPE_CHECKING:
    import torch

# torch is imported when a judge is built, not when the registry is read (config validation).


class TransformersOptions(JudgeOptions):
    batch_size: int = Field(8, ge=1)
    device: str | None = None  # "cuda" when available, else "cpu"
    dtype: Literal["float32", "float16", "bfloat16", "auto"] | None = None  # float32 on CPU, the checkpoint's on GPU


@JUDGES.register("transformers")
class TransformersJudge(Judge):
    """Options: `batch_size` (8), `device` ("cuda" when available, else "cpu"),
    `dtype` ("float32" on CPU, the checkpoint's own dtype on GPU)."""

    Options = TransformersOptions
    folder_kind = ("vision-language judge (LLaVA, Qwen2-VL, ...)", is_vision_language_judge)

    def __init__(self, ref: ModelRef, vote: VoteConfig | None = None):
        super().__init__(ref, vote)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        opts = self.options
        self.batch_size = opts.batch_size
        self.device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype: Any = opts.dtype or ("auto" if self.device.type == "cuda" else "float32")
        self.processor = AutoProcessor.from_pretrained(ref.name)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # the next token of every row sits at position -1
        self.model = AutoModelForImageTextToText.from_pretrained(ref.name, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
        self.model.to(self.device).eval()
        self.yes_ids, self.no_ids = yes_no_token_ids(self.tokenizer)
        self._prompts: dict[tuple[bool, str | None], str] = {}
        self.prompt = self.prompt_for(JudgeRequest("", "reference", "", "candidate"))  # the paper's question

    def prompt_for(self, req: JudgeRequest) -> str:
        """The rendered prompt of a request: with or without the reference image, in its type's wording."""
        key = (req.has_reference, req.degradation)
        if key not in self._prompts:
            image = {"type": "image"}
            self._prompts[key] = self.render(judge_messages(image if req.has_reference else None, image, req.degradation))
        return self._prompts[key]

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text of a chat whose image parts are `{"type": "image"}`."""
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def next_token_logprobs(self, prompts: list[str], images: list[list[Image.Image]], return_lengths: bool = False):
        """Log-softmax of the next-token logits, float32 on CPU, one row per prompt
        (and each prompt's length in tokens with `return_lengths`)."""
        import torch

        flat = [img for row in images for img in row]
        inputs = self.processor(text=prompts, images=flat or None, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1]
            logprobs = logits.float().log_softmax(dim=-1).cpu()
        if return_lengths:
            return logprobs, inputs["attention_mask"].sum(dim=1).tolist()
        return logprobs

    def masses(self, logprobs: "torch.Tensor") -> tuple[list[float], list[float]]:
        probs = logprobs.double().exp()
        return probs[:, self.yes_ids].sum(1).tolist(), probs[:, self.no_ids].sum(1).tolist()

    def judge(self, pairs: list[JudgeRequest]) -> list[JudgeResult]:
        results: list[JudgeResult] = []
        for start in range(0, len(pairs), self.batch_size):  # images are decoded one batch at a time
            chunk = pairs[start : start + self.batch_size]
            cache: dict[str, Image.Image] = {}  # one reference often serves several candidates
            out: list[JudgeResult | None] = [None] * len(chunk)
            ready: list[tuple[int, list[Image.Image], str]] = []
            for i, req in enumerate(chunk):
                try:
                    images = [_load(req.ref_path, cache)] if req.has_reference else []
                    ready.append((i, images + [_load(req.cand_path, cache)], self.prompt_for(req)))
                except ImageRejected as exc:
                    out[i] = JudgeResult.failed(f"unreadable image: {exc.detail}")
            scored = self._score([imgs for _, imgs, _ in ready], [p for _, _, p in ready]) if ready else []
            for (i, _, _), result in zip(ready, scored):
                out[i] = result
            results.extend(out)  # type: ignore[arg-type]
        return results

    def _score(self, images: list[list[Image.Image]], prompts: list[str] | None = None) -> list[JudgeResult]:
        prompts = prompts or [self.prompt] * len(images)
        try:
            p_yes, p_no = self.masses(self.next_token_logprobs(prompts, images))
        except Exception as exc:  # e.g. out of memory: retry one by one so one bad pair stays one abstention
            if len(images) == 1:
                return [JudgeResult.failed(f"model error: {type(exc).__name__}: {exc}")]
            return [r for row, p in zip(images, prompts) for r in self._score([row], [p])]
        return [JudgeResult.from_masses(y, n) for y, n in zip(p_yes, p_no)]

    def close(self) -> None:
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _load(path: str, cache: dict[str, Image.Image]) -> Image.Image:
    if path not in cache:
        try:
            cache[path] = load_rgb(path)
        except ImageRejected as exc:
            raise ImageRejected(exc.reason, f"{path}: {exc.detail}") from None
    return cache[path]
