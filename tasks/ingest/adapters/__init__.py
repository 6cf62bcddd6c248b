"""Dataset adapters: the registry `ADAPTERS` (name -> adapter class), filled by every module of this
package when first looked up; `get_adapter(name)` builds one."""
from .base import ADAPTERS, DatasetAdapter, PairListing, check_layout, get_adapter

__all__ = ["ADAPTERS", "DatasetAdapter", "PairListing", "check_layout", "get_adapter"]
