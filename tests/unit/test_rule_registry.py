"""The rule registry (procwatch_domain.rules) is the one list of alert rules and settings:
every place that spells the settings out (messages, SQL column lists, tables, validation,
OpenAPI) has exactly the registry's, so a setting added in one place only fails here."""

from __future__ import annotations

import typing

import pytest
from sqlalchemy import Boolean, Float, Integer

from procwatch_alerter import repository as alerter_repository
from procwatch_api import repository as api_repository
from procwatch_api import schemas as api_schemas
from procwatch_contracts.fast import ProcessAlertConfigView
from procwatch_contracts.messages import AlertEvent, ProcessAlertConfig
from procwatch_db.tables import metadata
from procwatch_domain import rules, status, validation
from procwatch_domain.alerts import SampleView, evaluate_transition
from procwatch_domain.liveness import SERVER_ALERT_TYPES
from procwatch_ingest import repository as ingest_repository

pytestmark = pytest.mark.unit

NAMES = rules.SETTING_NAMES


def test_the_registry_has_the_seed_rules_and_settings():
    assert [(r.condition, r.alert_type) for r in rules.RULES] == [
        ("down", "process_down"), ("restart", "process_restarted"),
        ("cpu", "process_cpu_high"), ("memory", "process_memory_high"),
        ("count_range", "process_count_out_of_range")]
    assert rules.SETTING_DEFAULTS == {
        "alert_on_down": True, "alert_on_restart": False, "alert_on_cpu": False, "alert_on_memory": False,
        "alert_on_count_range": True,
        "cpu_threshold_pct": 50.0, "memory_threshold_pct": 25.0, "min_count": None, "max_count": None,
        "alert_after_samples": 1, "resolve_after_samples": 1}
    assert rules.STATEFUL_CONDITIONS == ("down", "cpu", "memory", "count_range") == status.ALERT_CONDITIONS
    assert rules.ONE_SHOT_FLAGS == ("alert_on_restart",)


def test_messages_carry_exactly_the_registry_settings_in_order():
    assert tuple(ProcessAlertConfig.model_fields) == NAMES
    assert ProcessAlertConfigView.__struct_fields__ == NAMES
    for setting in rules.SETTINGS:
        assert ProcessAlertConfig.model_fields[setting.name].annotation == setting.annotation
        assert ProcessAlertConfig.model_fields[setting.name].default == setting.default  # old messages parse
    # The process rules' types, then the server-level ones (procwatch_domain.liveness).
    assert typing.get_args(AlertEvent.model_fields["type"].annotation) == rules.ALERT_TYPES + SERVER_ALERT_TYPES


def test_the_services_rows_and_column_lists_hold_every_setting():
    columns = [c.strip().split(".")[-1] for c in alerter_repository.PROCESS_COLUMNS.split(",")]
    row_fields = [f.name for f in alerter_repository.ProcessRow.__dataclass_fields__.values()]
    assert columns == row_fields and set(NAMES) <= set(columns)
    locked = ingest_repository.LockedProcess._fields
    assert locked[ingest_repository.ALERT_SETTINGS] == NAMES
    api_columns = [c.strip() for c in api_repository.PROCESS_COLUMNS.split(",")]
    assert [c for c in api_columns if c in rules.SETTINGS_BY_NAME] == list(NAMES)


def test_the_table_has_a_column_per_setting_with_its_type_and_default():
    table = metadata.tables["watched_processes"]
    kinds = {bool: Boolean, float: Float, int: Integer}
    for setting in rules.SETTINGS:
        column = table.columns[setting.name]
        assert isinstance(column.type, kinds[setting.type]) and column.nullable == setting.nullable
        if setting.nullable:  # null: not set
            assert setting.default is None and column.server_default is None
            continue
        default = column.server_default.arg
        assert (default == str(setting.default).lower()) if setting.is_flag else float(default) == setting.default
    width = table.columns["alerted_state"].type.length
    assert len(",".join(rules.STATEFUL_CONDITIONS)) <= width, "alerted_state cannot hold every condition"


def test_validation_and_the_openapi_models_cover_every_setting():
    assert validation.BOOLEAN_FIELDS == ("enabled", *(s.name for s in rules.FLAG_SETTINGS))
    assert tuple(validation.NUMBER_SETTINGS) == tuple(s.name for s in rules.PARAMETER_SETTINGS)
    assert validation.CREATE_DEFAULTS == {"enabled": True, **rules.SETTING_DEFAULTS}
    for model in (api_schemas.ProcessCreate, api_schemas.ProcessUpdate, api_schemas.Process):
        assert set(NAMES) <= set(model.model_fields), model.__name__
    create = api_schemas.ProcessCreate.model_json_schema()["properties"]
    for setting in rules.PARAMETER_SETTINGS:
        prop = create[setting.name]
        number = prop["anyOf"][0] if setting.nullable else prop
        assert (number["minimum"], number["maximum"]) == (setting.minimum, setting.maximum)
        assert prop["default"] == setting.default
        assert setting.nullable == ({"type": "null"} in prop.get("anyOf", []))
    assert typing.get_args(api_schemas.Alert.model_fields["type"].annotation) == rules.ALERT_TYPES + SERVER_ALERT_TYPES


@pytest.mark.parametrize("setting", rules.PARAMETER_SETTINGS, ids=lambda s: s.name)
def test_each_number_setting_is_validated_within_its_bounds(setting):
    ok = validation.validate_process_fields({setting.name: setting.maximum}, for_update=True)
    assert ok == {setting.name: setting.maximum}
    with pytest.raises(validation.ProcessValidationError) as err:
        validation.validate_process_fields({setting.name: setting.maximum * 2 + 1}, for_update=True)
    assert err.value.issues[0].field == setting.name


@pytest.mark.parametrize("rule", [r for r in rules.RULES if not r.one_shot], ids=lambda r: r.condition)
def test_every_stateful_rule_fires_only_with_its_flag_on(rule):
    """Each rule is reachable through evaluate_transition: with all flags on and the parameters at
    their minimum, an extreme sample makes it fire; with only its flag off, none does."""
    extremes = [SampleView(count=count, cpu_pct=100.0, memory_pct=100.0) for count in (0, 2**31 - 1)]
    all_on = ProcessAlertConfig(**{**rules.SETTING_DEFAULTS, **{s.name: True for s in rules.FLAG_SETTINGS},
                                   **{s.name: s.type(s.minimum) for s in rules.PARAMETER_SETTINGS}})
    off = all_on.model_copy(update={rule.flag.name: False})

    def fired(config) -> bool:
        return any(t.condition == rule.condition for sample in extremes
                   for t in evaluate_transition(frozenset(), config, None, sample))

    assert fired(all_on) and not fired(off)
