"""Dataset adapters: a registry from name to adapter class, filled by `@register_adapter`."""
from .base import ADAPTERS, DatasetAdapter, PairListing, get_adapter, register_adapter
from . import generic  # noqa: F401  (registers)
from . import public, public_real  # noqa: F401  (registers the public-dataset adapters)

__all__ = ["ADAPTERS", "DatasetAdapter", "PairListing", "get_adapter", "register_adapter"]
