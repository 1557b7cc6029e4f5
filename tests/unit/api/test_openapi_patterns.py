"""The name patterns /openapi.json publishes (name_patterns.py, generated) accept exactly what the
server's rules accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from procwatch_api import name_patterns
from procwatch_api.schemas import render_name_patterns
from procwatch_api.service import hostname_problem
from procwatch_domain.validation import process_name_problem

pytestmark = pytest.mark.unit

RULES = {"process_name": process_name_problem, "hostname": hostname_problem}
PATTERNS = {"process_name": re.compile(name_patterns.PROCESS_NAME), "hostname": re.compile(name_patterns.HOSTNAME)}


def test_the_generated_patterns_are_current():
    """Fails when a rule or Python's Unicode database changed: regenerate the file."""
    assert Path(name_patterns.__file__).read_text() == render_name_patterns(), \
        "regenerate: uv run python -m procwatch_api.schemas > services/api/src/procwatch_api/name_patterns.py"
names = st.text(st.characters(codec=None), min_size=1, max_size=12)


@pytest.mark.parametrize("rule", RULES)
@given(name=names)
@example(name="nginx")
@example(name="zero\u200bwidth")
@example(name="trailing\n")
@example(name="a;b")
@example(name="\U000e0001")  # a tag character (format)
@example(name="\U0010ffff")  # a noncharacter (unassigned)
def test_the_pattern_accepts_exactly_what_the_rule_accepts(rule, name):
    pattern = PATTERNS[rule]
    # Python's `$` also matches before a final newline; the document means the end of the string.
    assert (pattern.search(name) is not None and not name.endswith("\n")) == (RULES[rule](name) is None)
