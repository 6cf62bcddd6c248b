"""The degradation types, declared once: the four rain types (the default set) and the all-weather ones.

A manifest's `rain_type` column holds one of these keys (the column keeps its name and string type,
so runs written before the all-weather types existed read unchanged: no schema version bump). Every
declared type has a paper-layout folder (`DIR/<folder>/{input,target}/NAME`), a family and the noun a
judge is asked about. A run or config names the set it trains and evaluates on (`types:`); the
default is `RAIN_TYPES`.

To add a type: one `declare(...)` below (order = the order of tables, reports and the type index in
synthesis seeds, so append, never insert), a generator in `tasks/offline/synth` registered with
`register_rain(key)`, and judge wording in `tasks/vote/judges/degradations.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class DegradationType:
    key: str          # the manifest value
    folder: str       # the paper-layout folder
    family: str       # rain, snow or fog
    noun: str         # what a judge or a report calls it ("rain streaks", "falling snow", "haze")
    description: str


DEGRADATION_TYPES: dict[str, DegradationType] = {}


def declare(key: str, folder: str, family: str, noun: str, description: str) -> DegradationType:
    if key in DEGRADATION_TYPES:
        raise ValueError(f"degradation type {key!r} is already declared")
    if folder in {t.folder for t in DEGRADATION_TYPES.values()}:
        raise ValueError(f"folder {folder!r} already belongs to another degradation type")
    DEGRADATION_TYPES[key] = t = DegradationType(key, folder, family, noun, description)
    return t


declare("day_streak", "drs", "rain", "rain streaks", "daytime rain streaks")
declare("day_drop", "drd", "rain", "raindrops on the lens", "daytime raindrops on lens/glass")
declare("night_streak", "nrs", "rain", "rain streaks at night", "night rain streaks")
declare("night_drop", "nrd", "rain", "raindrops on the lens at night", "night raindrops")
declare("snow", "snow", "snow", "falling snow", "snowflakes of several sizes and depths (Snow100K-like)")
declare("fog", "fog", "fog", "fog or haze", "haze by the atmospheric scattering model (RESIDE-like); "
        "also rain with its veil of accumulation (Outdoor-Rain)")

RAIN_TYPES: tuple[str, ...] = tuple(k for k, t in DEGRADATION_TYPES.items() if t.family == "rain")
ALL_WEATHER_TYPES: tuple[str, ...] = tuple(DEGRADATION_TYPES)
DEFAULT_TYPES = RAIN_TYPES


def all_types() -> tuple[str, ...]:
    """Every declared key, in declaration order."""
    return tuple(DEGRADATION_TYPES)


def type_folders() -> dict[str, str]:
    """key -> paper-layout folder, for every declared type."""
    return {k: t.folder for k, t in DEGRADATION_TYPES.items()}


def type_index(key: str) -> int:
    """The type's position in declaration order (stable: new types are appended)."""
    try:
        return all_types().index(key)
    except ValueError:
        raise ValueError(f"unknown degradation type {key!r}; declared: {', '.join(all_types())}") from None


def order_types(keys: Iterable[str]) -> list[str]:
    """`keys` in declaration order; undeclared keys last, alphabetically."""
    known = all_types()
    keys = set(keys)
    return [k for k in known if k in keys] + sorted(keys - set(known))


def check_type(key: str | None, what: str = "degradation type") -> str | None:
    """`key` when declared (None passes); a ValueError listing the declared types otherwise."""
    if key is not None and key not in DEGRADATION_TYPES:
        raise ValueError(f"unknown {what} {key!r}; expected one of {', '.join(all_types())}")
    return key


def resolve_types(spec: str | Iterable[str] | None, key: str = "types") -> tuple[str, ...]:
    """A run's type set from a config value or a `--types` argument.

    None -> the default (the four rain types); `all` -> every declared type; `rain` / `snow` / `fog`
    -> that family; otherwise keys (a list, or a comma-separated string). Keeps declaration order,
    drops repeats; an unknown name or an empty set is a ValueError naming `key`.
    """
    if spec is None:
        return DEFAULT_TYPES
    at = f"{key}: " if key else ""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    families = {t.family for t in DEGRADATION_TYPES.values()}
    groups = ", ".join(["all", *sorted(families - set(DEGRADATION_TYPES))])
    if not items:
        raise ValueError(f"{at}empty; name some of {', '.join(all_types())} (or {groups})")
    chosen: set[str] = set()
    for item in items:
        if item == "all":
            chosen.update(all_types())
        elif item in DEGRADATION_TYPES:
            chosen.add(item)
        elif item in families:
            chosen.update(k for k, t in DEGRADATION_TYPES.items() if t.family == item)
        else:
            raise ValueError(f"{at}unknown degradation type {item!r}; declared: {', '.join(all_types())} (or {groups})")
    return tuple(k for k in all_types() if k in chosen)
