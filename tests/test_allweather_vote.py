"""The realism question per degradation type (issue 14): snow and fog candidates are asked about snow
and fog, the rain types keep the v1 question word for word, and every declared non-rain type has wording."""
from __future__ import annotations

from data_manifests import DEGRADATION_TYPES, RAIN_TYPES
from tasks.vote.judges.degradations import WEATHER_WORDING
from tasks.vote.judges.prompt import PROMPT_TEXT, judge_messages, prompt_text


def test_every_non_rain_type_has_its_wording():
    assert {k for k, t in DEGRADATION_TYPES.items() if t.family != "rain"} <= set(WEATHER_WORDING)
    assert not set(WEATHER_WORDING) & set(RAIN_TYPES)


def test_snow_and_fog_questions_name_their_weather_and_rain_keeps_v1():
    for t in RAIN_TYPES:
        assert prompt_text(t) == PROMPT_TEXT
    snow, fog = prompt_text("snow"), prompt_text("fog")
    assert "snow" in snow and "rain" not in snow and "fog or haze" in fog and "rain" not in fog
    assert "snow" in prompt_text("snow", reference=False)
    msg = judge_messages({"type": "image"}, {"type": "image"}, "fog")
    assert msg[0]["content"][-1]["text"] == fog
