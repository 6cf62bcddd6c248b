"""Embedders: images and texts into one vector space.

Interface `Embedder`; registry `EMBEDDERS` filled by `@EMBEDDERS.register(name)`; factory
`build_embedder(ref, cfg)`. Each backend declares its `options:` as a `Section` (`Options`),
checked at config load by `tasks.model_options`.

Both image AND text embeddings are L2-normalised (`normalised = True`, recorded in index sidecars).
The paper ranks gallery captions by L2 distance between text embeddings; on unit vectors
||a - b||² = 2 - 2·cos(a, b), so L2 ranks exactly as cosine does and does not reward a caption
for its embedding's norm (which in CLIP tracks token statistics, not meaning). Text L2 values are
then in [0, 2].

As with captioners, `preprocess` (PIL -> tensor, picklable, no model inside) runs in DataLoader
workers and `encode_images` takes the stacked batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
from pydantic import Field

from data_manifests.config_base import Section
from data_manifests.registry import Registry
from tasks.config import EmbedConfig, ModelRef
from tasks.model_ids import ModelLoadError, local_model_id, pick_device
from tasks.model_kind import is_open_clip_folder
from tasks.model_options import parse_options


class Embedder(ABC):
    Options: ClassVar[type[Section]] = Section  # the backend's `options:`; none by default
    model_id: str  # recorded with every embedding shard and index
    dim: int
    normalised: bool = True
    preprocess: Callable  # PIL.Image (RGB) -> torch.Tensor (C, H, W)

    @staticmethod
    @abstractmethod
    def model_id_for(ref: ModelRef) -> str:
        """The `model_id` this backend records for `ref`, without loading anything."""

    @abstractmethod
    def encode_images(self, batch) -> np.ndarray:
        """(n, dim) float32, L2-normalised, for a stacked batch of `preprocess` outputs."""

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""


EMBEDDERS: Registry[type[Embedder]] = Registry("embedder backend")


def build_embedder(ref: ModelRef, cfg: EmbedConfig | None = None) -> Embedder:
    return EMBEDDERS.get(ref.backend)(ref, cfg or EmbedConfig())


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Boolean mask of rows holding NaN or inf (these become `bad_embedding` rejects)."""
    return ~np.isfinite(vectors).all(axis=1)


def open_clip_model_id(name: str, pretrained: str | None) -> str:
    if name.startswith("local-dir:"):
        return local_model_id("open_clip", name[len("local-dir:"):], prefix="local-dir:")
    if pretrained and Path(pretrained).is_file():
        return f"open_clip:{name}:" + local_model_id("file", pretrained)[len("file:"):]
    return f"open_clip:{name}:{pretrained or 'random'}"


def embedder_model_id(ref: ModelRef) -> str:
    """The id an embedder records, computed without loading it (a finished stage's rerun loads nothing)."""
    return EMBEDDERS.get(ref.backend).model_id_for(ref)


class OpenClipOptions(Section):
    device: str | None = None  # auto: cuda when available
    precision: str | None = None  # any open_clip precision; fp16 on CUDA, fp32 on CPU
    text_batch_size: int = Field(256, ge=1)


@EMBEDDERS.register("open_clip")
class OpenClipEmbedder(Embedder):
    """open_clip CLIP. `ref.name`: a model name (`ViT-L-14`) with `ref.pretrained` a tag or a local
    checkpoint file, or `local-dir:FOLDER` / `hf-hub:ORG/REPO` (pretrained ignored).
    Options: `device` (auto), `precision` (`fp16` on CUDA, `fp32` on CPU; any open_clip precision),
    `text_batch_size` (256).
    """

    Options = OpenClipOptions
    folder_kind = ("OpenCLIP model folder (open_clip_config.json)", is_open_clip_folder)

    def __init__(self, ref: ModelRef, cfg: EmbedConfig):
        import open_clip

        opts = parse_options(type(self), ref.options, "models.embedder")
        self.device = pick_device(opts.device)
        self.precision = opts.precision or ("fp16" if self.device.startswith("cuda") else "fp32")
        self.text_batch_size = opts.text_batch_size
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                ref.name, pretrained=ref.pretrained, precision=self.precision, device=self.device
            )
            self.tokenizer = open_clip.get_tokenizer(ref.name)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"models.embedder: cannot load open_clip {ref.name!r} pretrained={ref.pretrained!r} ({exc}). "
                "Offline, use `local-dir:FOLDER` or a model name with a local checkpoint file as `pretrained`."
            ) from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.model_id = self.model_id_for(ref)
        self.dim = int(self.encode_texts(["a"]).shape[1])

    @staticmethod
    def model_id_for(ref: ModelRef) -> str:
        return open_clip_model_id(ref.name, ref.pretrained)

    def _input_dtype(self):
        import torch

        return {"fp16": torch.float16, "pure_fp16": torch.float16, "bf16": torch.bfloat16,
                "pure_bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def encode_images(self, batch) -> np.ndarray:
        import torch

        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            x = batch.to(self.device, self._input_dtype(), non_blocking=True)
            feats = self.model.encode_image(x, normalize=True)
        return feats.float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.text_batch_size):
                tokens = self.tokenizer(list(texts[start:start + self.text_batch_size])).to(self.device)
                out.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        if not out:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)
