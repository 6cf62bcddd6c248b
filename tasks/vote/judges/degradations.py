"""What a judge is asked about, per degradation type (issue 14): the words the realism question uses
for a candidate of that type, as (what the real photo was taken in, what is judged). `prompt.py`
builds its `DEGRADATION_WORDING` from this table. The rain types are left out on purpose: they keep
the v1 rain question word for word. A new declared type (`data_manifests/degradations.py`) that is not
rain gets its line here, or its candidates are asked about rain.
"""
from __future__ import annotations

WEATHER_WORDING: dict[str, tuple[str, str]] = {
    "snow": ("taken while snow was falling", "the falling snow"),
    "fog": ("taken in fog or haze", "the fog or haze"),
}
