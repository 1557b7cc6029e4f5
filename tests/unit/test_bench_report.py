"""bench/report.py: the RESULTS.md tables (medians, verdicts, escaping)."""

from __future__ import annotations

import pytest

from bench.report import Figure, Section, render

pytestmark = pytest.mark.unit


def _render(*sections: Section) -> str:
    return render(title="T", generated="2026-01-01 00:00 UTC", mode="quick, 3 run(s)",
                  machine={"nproc": "2", "load_average": "1.00 1.00 1.00"}, versions={"python": "3.11.7"},
                  sections=list(sections))


def test_figure_value_is_the_median_of_its_runs():
    f = Figure("rate", [30_000.0, 10_000.0, 20_000.0], "samples/s")
    assert f.value == 20_000.0
    assert f.cell() == "20,000 samples/s"
    assert f.runs_cell() == "30,000, 10,000, 20,000"


def test_render_lists_targets_with_verdicts_and_every_run():
    s = Section("Ingest", "uv run python -m bench ingest", figures=[
        Figure("ratio", [55.0, 65.0, 62.0], "%", reference="ceiling 80,000/s", target="≥ 60 %", met=True),
        Figure("p99", [120.0], "ms", target="≤ 100 ms", met=False, fmt="{:.1f}"),
        Figure("no target", [1.0], "x"),
    ], notes=["a note"])
    text = _render(s)
    assert "| Ingest | ratio | 62 % | ≥ 60 % | **met** |" in text
    assert "| Ingest | p99 | 120.0 ms | ≤ 100 ms | **not met** |" in text
    assert "| ratio | 62 % | 55, 65, 62 | ceiling 80,000/s | ≥ 60 % | **met** |" in text
    assert "no target" not in text.split("## Ingest")[0]  # only figures with a target in the summary
    assert "a note" in text
    assert "| nproc | 2 |" in text and "| python | 3.11.7 |" in text


def test_render_shows_a_failed_section_and_escapes_pipes():
    text = _render(Section("API", "cmd", error="RuntimeError: a | b"))
    assert "**Failed**: RuntimeError: a \\| b" in text
