"""procwatch_domain.validation: every rule of the seed's table, as pure functions."""

from __future__ import annotations

import math

import pytest

from procwatch_domain.validation import (
    CREATE_DEFAULTS,
    ProcessValidationError,
    process_name_problem,
    validate_process_fields,
)

pytestmark = pytest.mark.unit


def fields_with_issues(body, *, for_update=False) -> set[str]:
    with pytest.raises(ProcessValidationError) as info:
        validate_process_fields(body, for_update=for_update)
    return {i.field for i in info.value.issues}


@pytest.mark.parametrize("ch", list(";&$`\\\"'<>(){}|"))
def test_each_shell_metacharacter_is_rejected(ch):
    assert "metacharacters" in process_name_problem(f"a{ch}b")


@pytest.mark.parametrize("ch", [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u2003", "\u2028", "\u2029", "\x85", "\u3000"])
def test_each_whitespace_kind_is_rejected(ch):
    assert "whitespace" in process_name_problem(f"a{ch}b")


@pytest.mark.parametrize("ch", ["\x00", "\x07", "\x1b", "\x7f", "\u200b", "\u200e", "\ufeff", "\ud800", "\ue000"])
def test_control_format_surrogate_and_private_chars_are_rejected(ch):
    assert "control" in process_name_problem(f"a{ch}b")


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (100, True), (101, False)])
def test_name_length_bounds(length, ok):
    assert (process_name_problem("x" * length) is None) is ok


@pytest.mark.parametrize("name", ["nginx", "php-fpm8.2", "java_app", "postgres@14", "[kworker/0:1]", "名前", "émoji-🚀"])
def test_ordinary_names_pass(name):
    assert process_name_problem(name) is None


@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], {}])
def test_name_must_be_a_string(value):
    assert process_name_problem(value) == "must be a string"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.01, 0.01), (100, 100.0), (50, 50.0), (0.009, None), (100.01, None), (0, None), (-1, None),
     ("50", None), (True, None), (False, None), (None, None), (math.nan, None), (math.inf, None), (-math.inf, None)],
)
def test_threshold_bounds_and_types(value, expected):
    body = {"process_name": "n", "cpu_threshold_pct": value}
    if expected is None:
        assert fields_with_issues(body) == {"cpu_threshold_pct"}
    else:
        assert validate_process_fields(body, for_update=False)["cpu_threshold_pct"] == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), (1, True), (0, False), (2, None), (-1, None), ("true", None),
                            (1.0, None), (None, None), ([], None)]
)
def test_booleans_are_json_booleans_or_0_1(value, expected):
    body = {"process_name": "n", "alert_on_down": value}
    if expected is None:
        assert fields_with_issues(body) == {"alert_on_down"}
    else:
        assert validate_process_fields(body, for_update=False)["alert_on_down"] is expected


def test_create_fills_the_seed_defaults():
    assert validate_process_fields({"process_name": "nginx"}, for_update=False) == {"process_name": "nginx", **CREATE_DEFAULTS}
    assert CREATE_DEFAULTS == {
        "enabled": True, "alert_on_down": True, "alert_on_restart": False, "alert_on_cpu": False,
        "alert_on_memory": False, "cpu_threshold_pct": 50.0, "memory_threshold_pct": 25.0,
        # issue #18: count ranges (no bound: off) and flap protection (1: fire / resolve at once)
        "alert_on_count_range": True, "min_count": None, "max_count": None,
        "alert_after_samples": 1, "resolve_after_samples": 1,
    }


def test_create_requires_a_name_update_does_not():
    assert fields_with_issues({}) == {"process_name"}
    assert validate_process_fields({"enabled": 0}, for_update=True) == {"enabled": False}


def test_update_with_nothing_updatable_is_an_issue():
    assert fields_with_issues({}, for_update=True) == {"body"}
    assert fields_with_issues({"status": "up", "id": 4, "last_count": 3}, for_update=True) == {"body"}


def test_update_returns_only_given_fields_and_ignores_read_only_ones():
    assert validate_process_fields({"cpu_threshold_pct": 90, "status": "up", "id": 1}, for_update=True) == {
        "cpu_threshold_pct": 90.0
    }


def test_unknown_fields_are_issues_and_all_issues_are_reported():
    assert fields_with_issues({"process_name": "a b", "enabled": 3, "bogus": 1, "memory_threshold_pct": 0}) == {
        "process_name", "enabled", "bogus", "memory_threshold_pct",
    }


def test_a_huge_unknown_key_is_truncated_in_the_issue():
    with pytest.raises(ProcessValidationError) as info:
        validate_process_fields({"process_name": "n", "k" * 10_000: 1}, for_update=False)
    assert len(info.value.issues[0].field) == 100
