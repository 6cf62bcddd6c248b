"""A tiny open_clip ViT saved in open_clip's own folder layout (the layout of a hub repo).

`OUT/clip/open_clip_config.json` holds `model_cfg` + `preprocess_cfg`; the weights are
`OUT/clip/open_clip_model.safetensors`. It loads as `local-dir:OUT/clip` through
`open_clip.create_model_and_transforms` and `open_clip.get_tokenizer`, like any hub model.
The text tower keeps CLIP's full 49,408-token BPE vocabulary (it ships in the open_clip wheel),
so the real tokenizer runs; that embedding table is most of the ~14 MB.
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks.config import ModelRef
from tasks.offline.tiny_models import TINY_MODELS

# A real ViT shape at toy width: 224² input keeps the real preprocessing (resize, crop, normalise).
TINY_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


@TINY_MODELS.register("clip")
def make_tiny_clip(out_dir: Path, seed: int = 0) -> ModelRef:
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(out_dir) / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_cfg": TINY_CLIP_CFG,
        "preprocess_cfg": {
            "size": TINY_CLIP_CFG["vision_cfg"]["image_size"],
            "mode": "RGB",
            "mean": OPENAI_MEAN,
            "std": OPENAI_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    with torch.random.fork_rng(devices=[]):  # deterministic weights without touching global RNG
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_CLIP_CFG)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return ModelRef(backend="open_clip", name=f"local-dir:{folder}")
