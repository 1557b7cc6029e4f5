"""bench/common.py's percentile maths (the benches' figures depend on it)."""

from __future__ import annotations

import pytest

from bench.common import latency_summary, median, percentile

pytestmark = pytest.mark.unit


def test_percentile_interpolates_like_numpy_default():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)


def test_percentile_ignores_input_order_and_handles_one_value():
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_p99_of_100_values_is_near_the_top_not_the_max():
    values = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(values, 99) == pytest.approx(99.01)


def test_median_and_latency_summary_in_ms():
    assert median([3.0, 1.0, 2.0]) == 2.0
    s = latency_summary([0.001, 0.002, 0.003, 0.1])
    assert s["n"] == 4
    assert s["p50_ms"] == pytest.approx(2.5)
    assert s["max_ms"] == pytest.approx(100.0)
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
