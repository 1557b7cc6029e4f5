"""The name patterns /openapi.json publishes accept exactly what the server's rules accept."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from procwatch_api.schemas import name_pattern
from procwatch_api.service import hostname_problem
from procwatch_domain.validation import process_name_problem

pytestmark = pytest.mark.unit

RULES = {"process_name": process_name_problem, "hostname": hostname_problem}
# Built once here: each walks every code point.
PATTERNS = {name: re.compile(name_pattern(rule)) for name, rule in RULES.items()}
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
