"""Captioners: images in, one English caption per image out.

Interface `Captioner`; registry `CAPTIONERS` filled by `@CAPTIONERS.register(name)`; factory
`build_captioner(ref, cfg)` picks the backend named by `ref.backend`. Each backend declares its
`options:` as a `Section` (`Options`), checked at config load by `tasks.model_options`.

A captioner splits its work in two so decoding can overlap the model: `preprocess` (one PIL image ->
one tensor, cheap, picklable, runs in DataLoader workers) and `caption_batch` (a stacked batch ->
captions, in the main process). `caption(images)` does both for callers that already hold images.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, ClassVar, Literal

from data_manifests.config_base import Section
from data_manifests.registry import Registry
from tasks.config import CaptionConfig, ModelRef
from tasks.model_ids import ModelLoadError, local_model_id, pick_device
from tasks.model_kind import is_blip_captioner
from tasks.model_options import parse_options


class Captioner(ABC):
    Options: ClassVar[type[Section]] = Section  # the backend's `options:`; none by default
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


CAPTIONERS: Registry[type[Captioner]] = Registry("captioner backend")


def build_captioner(ref: ModelRef, cfg: CaptionConfig | None = None) -> Captioner:
    return CAPTIONERS.get(ref.backend)(ref, cfg or CaptionConfig())


class _BlipPreprocess:
    """Only the image processor, so DataLoader workers never receive the model."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def captioner_model_id(ref: ModelRef) -> str:
    """The id a captioner records, computed without loading it (a finished stage's rerun loads nothing)."""
    return CAPTIONERS.get(ref.backend).model_id_for(ref)


class BlipOptions(Section):
    device: str | None = None  # auto: cuda when available
    dtype: Literal["float32", "float16", "bfloat16"] | None = None  # float16 on CUDA, float32 on CPU
    prompt: str | None = None  # conditional captioning prefix such as "a picture of"


@CAPTIONERS.register("blip")
class BlipCaptioner(Captioner):
    """BLIP image captioning through transformers; `ref.name` is a hub name or a local folder.

    Greedy decoding, `cfg.max_new_tokens`. Options: `device` (auto), `dtype` (float16 on CUDA,
    float32 on CPU), `prompt` (conditional captioning prefix such as "a picture of"; none by default).
    """

    Options = BlipOptions
    folder_kind = ("BLIP captioner", is_blip_captioner)

    def __init__(self, ref: ModelRef, cfg: CaptionConfig):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        opts = parse_options(type(self), ref.options, "models.captioner")
        self.device = pick_device(opts.device)
        self.dtype = getattr(torch, opts.dtype or ("float16" if self.device.startswith("cuda") else "float32"))
        self.prompt = opts.prompt
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
