"""procwatch_runtime.gc_tuning and the setting every service reads it from."""

from __future__ import annotations

import gc

import pytest
from pydantic import ValidationError

from procwatch_runtime.gc_tuning import DEFAULT_GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_gc_freezes_what_startup_built_and_raises_only_the_young_threshold(restore_gc):
    gc.set_threshold(700, 10, 10)
    survivor = [object() for _ in range(10)]  # alive at "startup": frozen

    assert tune_gc(12_345) == (12_345, 10, 10)
    assert gc.get_threshold() == (12_345, 10, 10)
    assert gc.get_freeze_count() > len(survivor)


def test_zero_keeps_the_collector_as_it_is(restore_gc):
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()

    assert tune_gc(0) == (700, 10, 10)
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize(("module", "cls", "prefix"), [
    ("procwatch_ingest.settings", "IngestSettings", "PROCWATCH_INGEST_"),
    ("procwatch_alerter.settings", "AlerterSettings", "PROCWATCH_ALERTER_"),
    ("procwatch_api.settings", "ApiSettings", "PROCWATCH_API_"),
])
def test_each_service_reads_the_threshold_under_its_own_prefix(monkeypatch, module, cls, prefix):
    settings_cls = getattr(__import__(module, fromlist=[cls]), cls)
    assert settings_cls().gc_gen0_threshold == DEFAULT_GEN0_THRESHOLD
    monkeypatch.setenv(f"{prefix}GC_GEN0_THRESHOLD", "0")
    assert settings_cls().gc_gen0_threshold == 0
    monkeypatch.setenv(f"{prefix}GC_GEN0_THRESHOLD", "-1")
    with pytest.raises(ValidationError):
        settings_cls()
