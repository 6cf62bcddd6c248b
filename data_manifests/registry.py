"""One registry class for every pluggable kind of the project (BasicSR `utils/registry.py` style).

    ADAPTERS = Registry("dataset adapter")

    @ADAPTERS.register("rain13k")
    class Rain13K(DatasetAdapter): ...

    ADAPTERS.get("rain13k")        # -> the class
    ADAPTERS.get("rain31k")        # RegistryError: unknown dataset adapter 'rain31k'; known: rain13k, ...

Registering a second object under a taken name is refused. `lazy_modules` are imported on the first
look-up, so a registry can be consulted before the modules that fill it have been imported.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate name; the message names the kind and lists the known names.

    Also a ValueError: a name from a config or a command line is a bad value to the code that reads it.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, lazy_modules: tuple[str, ...] = ()):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy_modules = lazy_modules
        self._loaded = not lazy_modules

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            raise RegistryError(f"{self.kind} {name!r} is already registered to {_describe(existing)}")
        self._items[name] = obj

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._lazy_modules:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise RegistryError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}"

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)


def package_modules(package: str, suffix: str = "") -> tuple[str, ...]:
    """The modules of `package` whose names end with `suffix`, found without importing them: a
    registry's `lazy_modules`, so a new backend is one new file (`tasks/vote/judges/NAME_backend.py`)."""
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec(package)
    folders = spec.submodule_search_locations if spec is not None else None
    return tuple(sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(folders or []) if m.name.endswith(suffix)))


def _describe(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)
