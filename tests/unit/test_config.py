from __future__ import annotations

from pathlib import Path

import pytest

from faas.config import SETTINGS, ConfigError, load_config, settings_table


def test_defaults_match_the_documented_quick_start() -> None:
    config = load_config({})
    assert (config.api.host, config.api.port) == ("127.0.0.1", 9000)
    assert config.store.data_dir == Path(".faas")
    assert config.api.region == "us-east-1"
    assert config.api.account_id == "000000000000"


def test_environment_then_flags_take_precedence() -> None:
    environ = {"FAAS_PORT": "9100", "FAAS_DATA_DIR": "/tmp/x", "FAAS_HOST": "0.0.0.0"}
    config = load_config(environ, {"port": "9200", "host": None})
    assert config.api.port == 9200
    assert config.api.host == "0.0.0.0"
    assert config.store.data_dir == Path("/tmp/x")


def test_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="FAAS_PORT"):
        load_config({"FAAS_PORT": "ninety"})
    with pytest.raises(ConfigError, match="FAAS_IDLE_TIMEOUT_S"):
        load_config({"FAAS_IDLE_TIMEOUT_S": "-1"})


def test_tuple_settings_parse_from_text() -> None:
    config = load_config({"FAAS_RETRY_DELAYS_S": "1,2.5"})
    assert config.events.retry_delays_s == (1.0, 2.5)


def test_boolean_settings_parse_from_text() -> None:
    assert load_config({}).sandbox.zygote is True
    assert load_config({"FAAS_ZYGOTE": "false"}).sandbox.zygote is False
    assert load_config({}, {"zygote": "yes"}).sandbox.zygote is True
    with pytest.raises(ConfigError, match="FAAS_ZYGOTE"):
        load_config({"FAAS_ZYGOTE": "sometimes"})


def test_choice_settings_refuse_other_values() -> None:
    assert load_config({"FAAS_KEEP_ALIVE_POLICY": "adaptive"}).pool.keep_alive_policy == "adaptive"
    with pytest.raises(ConfigError, match="FAAS_KEEP_ALIVE_POLICY"):
        load_config({"FAAS_KEEP_ALIVE_POLICY": "forever"})


def test_every_setting_is_in_the_table() -> None:
    table = settings_table()
    for setting in SETTINGS:
        assert setting.flag in table and setting.env_var in table
