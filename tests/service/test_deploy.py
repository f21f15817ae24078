"""docker-compose.yml and the Dockerfile, checked by reading them (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sdr_model.cli import build_parser
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def _compose() -> dict:  # type: ignore[type-arg]
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def test_compose_has_redis_api_and_a_gpu_worker() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "api", "worker"}
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["worker"]["build"]["args"]["EXTRAS"] == "gpu"
    assert services["api"]["environment"]["SDR_BROKER_URL"] == services["worker"]["environment"]["SDR_BROKER_URL"]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_compose_commands_are_real_sdr_subcommands(service: str) -> None:
    spec = _compose()["services"][service]
    command = spec["command"]
    assert command[0] == "sdr" and command[1] in _subcommands()
    build_parser().parse_args(command[1:])  # every flag exists (argparse exits on an unknown one)


def test_compose_variables_are_real_settings() -> None:
    fields = {f"SDR_{name.upper()}" for name in Settings.model_fields}
    for name, spec in _compose()["services"].items():
        for variable in spec.get("environment", {}):
            if variable.startswith("SDR_"):
                assert variable in fields, f"{name}: {variable} is not a setting"
    # and a real value for each parses (`${VAR:-}` interpolation resolves to an empty string)
    env = {k: re.sub(r"\$\{[^}]*\}", "", str(v)) for k, v in _compose()["services"]["worker"]["environment"].items()}
    Settings(**{k[4:].lower(): v for k, v in env.items()})


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (REPO / "service" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for item in source.split():
            assert (REPO / item).exists(), item
    assert _compose()["services"]["api"]["build"]["dockerfile"] == "service/Dockerfile"


def test_settings_refuse_a_visibility_timeout_below_the_hard_limit() -> None:
    with pytest.raises(ValueError, match="SDR_VISIBILITY_TIMEOUT"):
        Settings(task_soft_time_limit=60, task_time_limit=120, visibility_timeout=100)
    with pytest.raises(ValueError, match="SDR_ROUTE_SHARDS"):
        Settings(route_shards=5)


def test_settings_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDR_API_KEYS", "key-one, key-two")
    monkeypatch.setenv("SDR_DATA_ROOTS", "/srv/x:/srv/y")
    s = Settings()
    assert s.api_keys == ["key-one", "key-two"] and [str(p) for p in s.data_roots] == ["/srv/x", "/srv/y"]
    assert "key-one" not in repr(s)  # keys never show up in logs
