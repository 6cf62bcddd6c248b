"""Synthesis: clean photos -> degraded/clean pairs of the four rain types, snow and fog, and a synthetic gallery.

Importing the package fills ``RAIN_GENERATORS`` (rain type key -> generator).
"""
from . import drops, fog, night, snow, streaks  # noqa: F401  (registers the generators)
from .base import PROFILES, RAIN_GENERATORS, RainPair, get_generator, register_rain
from .clean_photos import BUILTIN_PHOTOS, CleanSource
from .synthesize import SynthItem, parse_size, render, synthesize_gallery, synthesize_paired

__all__ = ["BUILTIN_PHOTOS", "CleanSource", "PROFILES", "RAIN_GENERATORS", "RainPair", "SynthItem",
           "get_generator", "parse_size", "register_rain", "render", "synthesize_gallery", "synthesize_paired"]
