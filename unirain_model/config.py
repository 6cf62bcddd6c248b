"""The `train:` and `evaluate:` sections of a run config (pydantic, unknown keys refused).

Errors name the dotted key (`train.reweighting.tau: ...`). `model` is a path to a model YAML
(relative to the run config's folder, then to the working directory / repository root) or an
inline mapping with `type`. Paper defaults: AdamW 2e-4, batch 8, 128² crops, 300k iterations,
CoBa with history 10, τ = 5, 20 warm-up evaluations, floor 0.1 (the authors' training script).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

# The project's one config error and section base (unknown keys refused, frozen).
from data_manifests.config_base import ConfigError  # noqa: F401  (re-exported: callers import it here)
from data_manifests.config_base import Section as _Section
from data_manifests.config_base import config_chain, format_validation_error, merge_config

REPO_ROOT = Path(__file__).resolve().parent.parent


class ReweightingConfig(_Section):
    kind: Literal["coba", "uniform"] = "coba"
    history: int = Field(10, ge=1, description="validation losses (and slopes) CoBa looks back over")
    tau: float = Field(5.0, gt=0, description="temperature of the divergence factor AF")
    warmup_evals: int = Field(20, ge=0, description="reweighting updates (clock ticks) with uniform weights before CoBa starts")
    min_weight: float = Field(0.1, ge=0, le=0.25, description="floor per type (min_weight·N <= 1)")
    every: Literal["epoch"] | Annotated[int, Field(ge=1)] | None = Field(
        None, description="the reweighting clock: 'epoch' (one pass over the training pairs, the released "
                          "code), N iterations, or null = at every evaluation (eval_every)")

    @field_validator("every", mode="before")
    @classmethod
    def _one_message(cls, v: Any) -> Any:  # one clear error instead of one per union member
        if v is None or v == "epoch" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"expected 'epoch', a whole number of iterations >= 1, or null; got {v!r}")


class TrainConfig(_Section):
    model: str | dict[str, Any] = Field("configs/model/unirain-s.yaml", description="model YAML path or inline mapping")
    iters: int = Field(300_000, ge=1, description="total iterations (a resumed run ends here too)")
    batch_size: int = Field(8, ge=1, description="per process")
    crop: int = Field(128, ge=8)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_iters: int = Field(3000, ge=0, description="linear warm-up; clipped to iters")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after the linear warm-up: cosine from lr down to min_lr, or lr constant")
    min_lr: float = Field(0.0, ge=0, description="the cosine's floor (<= lr); a floor of 0.3-0.5 x lr keeps a "
                          "short run learning past the identity plateau (docs/training.md)")
    aux_weight: float = Field(0.01, ge=0, description="weight of the Hard-MoE load-balancing loss")
    l2_iters: int = Field(0, ge=0, description="first iterations trained with mean squared error instead of "
                          "L1: a fast start for short runs (docs/training.md, 'Why it did not learn'); 0 = L1 throughout")
    loss: Literal["l1", "charbonnier"] = Field(
        "l1", description="reconstruction loss after the l2_iters phase: l1 (the paper's) or charbonnier "
                          "sqrt(e² + eps²), which leaves the identity plateau of short runs sooner")
    charbonnier_eps: float = Field(1e-3, gt=0, description="eps of the Charbonnier loss")
    grad_clip: float | None = Field(None, gt=0)
    eval_every: int = Field(1000, ge=1, description="iterations between per-type validations")
    val_fraction: float = Field(0.05, gt=0, lt=1)
    val_crop: int | None = Field(128, ge=8, description="centre crop for the validation loss; null = whole images")
    val_max_per_type: int | None = Field(64, ge=1)
    reweighting: ReweightingConfig = ReweightingConfig()
    sampler: Literal["balanced", "shuffle"] = Field(
        "balanced", description="balanced: every batch round-robins the rain types; shuffle: one merged list "
                                "shuffled each epoch (the released code; batches follow the data's type mix)")
    num_workers: int = Field(2, ge=0)
    seed: int = 0
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    log_every: int = Field(50, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept on disk")

    @field_validator("min_lr")
    @classmethod
    def _floor_below_lr(cls, v: float, info: ValidationInfo) -> float:
        lr = info.data.get("lr")
        if lr is not None and v > lr:
            raise ValueError(f"the cosine's floor {v} is above train.lr {lr}")
        return v


class EvalConfig(_Section):
    data: list[str] = Field(default_factory=list, description="test folders in the paper layout (one test set each)")
    manifests: list[str] = Field(default_factory=list, description="test manifests (one test set per source)")
    crop_border: int = Field(0, ge=0)
    tile: int | None = Field(None, ge=16, description="tile size for large test images; null = whole images")
    tile_overlap: int = Field(32, ge=0)
    device: str = "auto"
    save_images: bool = False
    protocol: Literal["basicsr", "released"] = Field(
        "basicsr", description="basicsr (BasicSR PSNR/SSIM, RGB and Y) or released (the authors' test.py: crop to "
                               "multiples of 16, scikit-image SSIM on RGB)")
    grid_images: int = Field(3, ge=0, description="images per rain type in the before/after grids; 0 = none")


def _format(exc: ValidationError, prefix: str) -> str:
    return format_validation_error(exc, prefix)


def parse_train_config(data: dict[str, Any] | None, origin: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_format(exc, 'train')}") from None


def parse_eval_config(data: dict[str, Any] | None, origin: str = "config") -> EvalConfig:
    try:
        return EvalConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_format(exc, 'evaluate')}") from None


def load_run_yaml(path: str | Path) -> dict[str, Any]:
    """A run config's raw keys after its `extends:` chain (paths not resolved)."""
    data: dict[str, Any] = {}
    for _file, own in config_chain(path):
        data = merge_config(data, own)
    return data


def _chain_section(path: str | Path, name: str, resolve) -> dict[str, Any]:
    """One section merged along the `extends:` chain, each file's relative paths resolved from its folder
    by `resolve(section, folder, file)` before the next file's keys go on top."""
    merged: dict[str, Any] = {}
    for file, own in config_chain(path):
        section = own.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{file}: {name}: must be a mapping")
        merged = merge_config(merged, resolve(dict(section), file.parent, file))
    return merged


def _resolve_train_paths(section: dict[str, Any], folder: Path, file: Path) -> dict[str, Any]:
    if isinstance(section.get("model"), str):
        section["model"] = str(resolve_model_path(section["model"], folder))
    return section


def _resolve_eval_paths(section: dict[str, Any], folder: Path, file: Path) -> dict[str, Any]:
    for key in ("data", "manifests"):
        if isinstance(section.get(key), list):
            section[key] = [str((folder / p).resolve()) for p in section[key]]  # absolute stays absolute
    return section


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """`train:` of a run config (after its `extends:` chain), with overrides (None values ignored), model
    path resolved from the folder of the file that names it."""
    section = _chain_section(path, "train", _resolve_train_paths)
    section = {**section, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = parse_train_config(section, origin=str(path))
    if isinstance(cfg.model, str):  # the built-in default names a file of the repository
        cfg = cfg.model_copy(update={"model": str(resolve_model_path(cfg.model, None if "model" not in section
                                                                     else Path(path).parent))})
    return cfg


def load_eval_config(path: str | Path | None, **overrides: Any) -> EvalConfig:
    """`evaluate:` of a run config (after its `extends:` chain; test folders resolved from the folder of
    the file that names them), with overrides."""
    data = _chain_section(path, "evaluate", _resolve_eval_paths) if path else {}
    return parse_eval_config({**data, **{k: v for k, v in overrides.items() if v is not None}}, str(path or "evaluate"))


def resolve_model_path(ref: str, config_dir: Path | None = None) -> Path:
    """The one resolver of `train.model`: a relative path is read from the run config's folder
    (`config_dir`), never from the working directory; without a config (the built-in default) from
    the repository root. The error names the resolved path."""
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = (config_dir if config_dir is not None else REPO_ROOT) / path
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"train.model: not found: {path} "
                          "(relative paths are read from the config's folder)")
    return path


def model_config(cfg: TrainConfig) -> dict[str, Any]:
    """The model mapping for `build_model`, from a path or inline."""
    from unirain_model.archs import load_model_config

    if isinstance(cfg.model, dict):
        if "type" not in cfg.model:
            raise ConfigError("train.model: an inline model needs a 'type'")
        return dict(cfg.model)
    try:
        return load_model_config(resolve_model_path(cfg.model))
    except ValueError as exc:
        raise ConfigError(f"train.model: {exc}") from None
