"""The generator interface and its registry (one generator per declared degradation type: the four
rain types, snow and fog).

A generator turns a clean daytime photo into a (rainy, target) pair. Day types return the photo
itself as target; night types first turn the photo into a clean night scene and return that as the
target, so the pair differs only by rain. Images are float32 HxWx3 in [0, 1].

Every generator has two parameter profiles: ``paired`` (training-style sets) and ``gallery``
(a stand-in for real rain photos). They use *different ranges* on purpose, so the gallery does not
simply mirror the candidates it will later be compared against.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from data_manifests.registry import Registry
from data_manifests.degradations import all_types, check_type
from data_manifests.schemas import RAIN_TYPE_FOLDERS, RAIN_TYPES, TYPE_FOLDERS

PROFILES = ("paired", "gallery")


class RainPair(NamedTuple):
    rainy: np.ndarray   # float32 HxWx3 in [0, 1]
    target: np.ndarray  # float32 HxWx3 in [0, 1]


RainGenerator = Callable[[np.ndarray, np.random.Generator, str], RainPair]

# Filled by the generator modules, imported on the first look-up.
RAIN_GENERATORS: Registry[RainGenerator] = Registry(
    "rain generator", lazy_modules=("tasks.offline.synth.streaks", "tasks.offline.synth.drops", "tasks.offline.synth.night",
                                      "tasks.offline.synth.snow", "tasks.offline.synth.fog"))


def register_rain(key: str) -> Callable[[RainGenerator], RainGenerator]:
    """Register ``fn(clean, rng, profile) -> RainPair`` under a declared degradation type key
    (`data_manifests/degradations.py`), nothing else."""
    check_type(key)
    return RAIN_GENERATORS.register(key)


def get_generator(key: str) -> RainGenerator:
    return RAIN_GENERATORS.get(key)


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown synthesis profile {profile!r}; expected one of {PROFILES}")


__all__ = ["PROFILES", "RAIN_GENERATORS", "RAIN_TYPES", "RAIN_TYPE_FOLDERS", "TYPE_FOLDERS", "all_types", "RainGenerator", "RainPair",
           "check_profile", "get_generator", "register_rain"]
