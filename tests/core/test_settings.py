"""Settings from ``SHIPYARD_*`` environment variables: what a user sets in a shell or a unit file
reaches the platform typed and checked, and a bad value is refused naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipyard.core.errors import InvalidArgument
from shipyard.core.settings import Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean slate: no SHIPYARD_* variable from the caller's shell, a home in tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("SHIPYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_variables_set_typed_fields(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SHIPYARD_PORT", "9123")
    env.setenv("SHIPYARD_AUTH", "true")
    env.setenv("SHIPYARD_JOB_LEASE_S", "2.5")
    env.setenv("SHIPYARD_EXECUTOR", "ray")
    env.setenv("SHIPYARD_JOB_WORKERS_EMBEDDED", "0")
    s = Settings()
    assert (s.port, s.auth, s.job_lease_s, s.executor) == (9123, True, 2.5, "ray")
    assert s.job_workers_embedded is False
    # Derived defaults follow the home the environment names.
    assert s.home == (tmp_path / "home").resolve()
    assert s.database_url == f"sqlite:///{s.home / 'shipyard.db'}"
    assert s.artifact_root == str(s.home / "artifacts")
    assert s.auto_migrate is True


def test_names_are_read_in_any_case(env: pytest.MonkeyPatch) -> None:
    env.setenv("shipyard_port", "9124")
    env.setenv("Shipyard_Mlflow_Project", "team")
    s = Settings()
    assert (s.port, s.mlflow_project) == (9124, "team")


def test_lists_and_mappings_are_json(env: pytest.MonkeyPatch) -> None:
    env.setenv("SHIPYARD_EXECUTOR_PRELOAD", '["json", "shipyard.jobs.launcher"]')
    env.setenv("SHIPYARD_ARTIFACT_STORAGE_OPTIONS", '{"endpoint_url": "http://127.0.0.1:9"}')
    s = Settings()
    assert s.executor_preload == ["json", "shipyard.jobs.launcher"]
    assert s.artifact_storage_options == {"endpoint_url": "http://127.0.0.1:9"}


def test_arguments_win_over_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("SHIPYARD_PORT", "9125")
    env.setenv("SHIPYARD_EXECUTOR_PRELOAD", "not json")  # not read: the argument is given
    s = Settings(port=9126, executor_preload=["json"])
    assert (s.port, s.executor_preload) == (9126, ["json"])


def test_unknown_variables_are_ignored(env: pytest.MonkeyPatch) -> None:
    env.setenv("SHIPYARD_INPUT_STORAGE_OPTIONS", "{}")  # a job's, not a setting
    env.setenv("SHIPYARD_NO_SUCH_SETTING", "x")
    assert Settings().port == 8080


def test_a_malformed_json_value_names_the_setting(env: pytest.MonkeyPatch) -> None:
    env.setenv("SHIPYARD_ARTIFACT_STORAGE_OPTIONS", "endpoint_url=http://x")
    with pytest.raises(InvalidArgument) as err:
        Settings()
    assert err.value.details["field"] == "artifact_storage_options"
    assert "SHIPYARD_ARTIFACT_STORAGE_OPTIONS must be JSON" in err.value.message


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("SHIPYARD_PORT", "70000", "port"),
        ("SHIPYARD_PORT", "eighty", "port"),
        ("SHIPYARD_EXECUTOR", "slurm", "executor"),
        ("SHIPYARD_AUTH", "maybe", "auth"),
        ("SHIPYARD_EXECUTOR_PRELOAD", '{"not": "a list"}', "executor_preload"),
        ("SHIPYARD_MLFLOW_PROJECT", "no spaces", "mlflow_project"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(
    env: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(InvalidArgument) as err:
        Settings()
    assert err.value.details["field"] == field
    assert err.value.message.startswith(f"{field}: ")
    assert err.value.message.endswith(f"(set by {name})")


def test_a_bad_argument_is_refused_naming_the_setting(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument) as err:
        Settings(port=70000)
    assert err.value.details["field"] == "port"
    assert err.value.message == "port: Input should be less than or equal to 65535"
