"""Captioners: images in, one English caption per image out.

Interface `Captioner`; registry `CAPTIONERS` filled by `@register_captioner(name)`; factory
`build_captioner(ref, cfg)` picks the backend named by `ref.backend`.

A captioner splits its work in two so decoding can overlap the model: `preprocess` (one PIL image ->
one tensor, cheap, picklable, runs in DataLoader workers) and `caption_batch` (a stacked batch ->
captions, in the main process). `caption(images)` does both for callers that already hold images.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from tasks.config import CaptionConfig, ModelRef
from tasks.model_ids import ModelLoadError, local_model_id, pick_device


class Captioner(ABC):
    name: str  # backend name, as in the registry
    model_id: str  # recorded in the `captions` manifest's `model` column
    preprocess: Callable  # PIL.Image (RGB) -> torch.Tensor; picklable, no model inside

    @staticmethod
    @abstractmethod
    def model_id_for(ref: ModelRef) -> str:
        """The `model_id` this backend records for `ref`, without loading anything."""

    @abstractmethod
    def caption_batch(self, pixel_values) -> list[str]:
        """Captions for a stacked batch of `preprocess` outputs."""

    def caption(self, images: list) -> list[str]:
        import torch

        if not images:
            return []
        return self.caption_batch(torch.stack([self.preprocess(im) for im in images]))


CAPTIONERS: dict[str, type[Captioner]] = {}


def register_captioner(name: str):
    def deco(cls):
        CAPTIONERS[name] = cls
        cls.name = name
        return cls

    return deco


def build_captioner(ref: ModelRef, cfg: CaptionConfig | None = None) -> Captioner:
    if ref.backend not in CAPTIONERS:
        raise ModelLoadError(
            f"models.captioner.backend: unknown captioner {ref.backend!r}; known: {sorted(CAPTIONERS)}"
        )
    return CAPTIONERS[ref.backend](ref, cfg or CaptionConfig())


class _BlipPreprocess:
    """Only the image processor, so DataLoader workers never receive the model."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def captioner_model_id(ref: ModelRef) -> str:
    """The id a captioner records, computed without loading it (a finished stage's rerun loads nothing)."""
    if ref.backend not in CAPTIONERS:
        raise ModelLoadError(f"models.captioner.backend: unknown captioner {ref.backend!r}; known: {sorted(CAPTIONERS)}")
    return CAPTIONERS[ref.backend].model_id_for(ref)


@register_captioner("blip")
class BlipCaptioner(Captioner):
    """BLIP image captioning through transformers; `ref.name` is a hub name or a local folder.

    Greedy decoding, `cfg.max_new_tokens`. Options: `device` (auto), `dtype` (float16 on CUDA,
    float32 on CPU), `prompt` (conditional captioning prefix such as "a picture of"; none by default).
    """

    def __init__(self, ref: ModelRef, cfg: CaptionConfig):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        opts = dict(ref.options)
        self.device = pick_device(opts.pop("device", None))
        dtype_name = opts.pop("dtype", "float16" if self.device.startswith("cuda") else "float32")
        self.dtype = getattr(torch, dtype_name)
        self.prompt = opts.pop("prompt", None)
        if opts:
            raise ModelLoadError(f"models.captioner.options: unknown keys {sorted(opts)} for backend blip")
        self.max_new_tokens = cfg.max_new_tokens
        try:
            self.processor = BlipProcessor.from_pretrained(ref.name)
            self.model = BlipForConditionalGeneration.from_pretrained(ref.name, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"models.captioner.name: cannot load BLIP {ref.name!r} ({exc}). Offline, name a local "
                "folder saved with save_pretrained, or a checkpoint already in the Hugging Face cache."
            ) from None
        self.model.to(self.device).eval()
        self.preprocess = _BlipPreprocess(self.processor.image_processor)
        self.model_id = self.model_id_for(ref)

    @staticmethod
    def model_id_for(ref: ModelRef) -> str:
        local = Path(ref.name)
        model_id = local_model_id("blip", local) if local.is_dir() else f"blip:{ref.name}"
        prompt = ref.options.get("prompt")
        return model_id + (f"|prompt={prompt}" if prompt else "")

    def caption_batch(self, pixel_values) -> list[str]:
        import torch

        n = pixel_values.shape[0]
        if n == 0:
            return []
        kwargs = {}
        if self.prompt:
            tok = self.processor.tokenizer([self.prompt] * n, return_tensors="pt")
            kwargs = {"input_ids": tok["input_ids"].to(self.device), "attention_mask": tok["attention_mask"].to(self.device)}
        with torch.inference_mode():
            out = self.model.generate(
                pixel_values=pixel_values.to(self.device, self.dtype),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                **kwargs,
            )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]
