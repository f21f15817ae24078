"""The dict forms of the frozen config values: what a checkpoint header or a request may hold."""

from __future__ import annotations

from typing import Any

import pytest

from sdr_model import Preprocessing, preset_config
from sdr_model.config import ConfigError
from sdr_model.routing import RouteOptions

VALUES: list[Any] = [preset_config("sdr_tiny"), Preprocessing(), RouteOptions(k=20, seed=3)]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_value_survives_its_dict_form(value: Any) -> None:
    assert type(value).from_dict(value.to_dict()) == value


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_misspelt_key_is_refused_by_name(value: Any) -> None:
    """Not dropped (the default would stand in silently) and not a bare TypeError from the constructor."""
    d = value.to_dict()
    d["sead"] = d.pop(next(iter(d)))
    with pytest.raises(ValueError, match=r"unknown .*\['sead'\]; known: \[") as raised:
        type(value).from_dict(d)
    assert isinstance(raised.value, ConfigError) == (not isinstance(value, RouteOptions))
