"""`procwatch up`'s flags: the agent runs unless --no-agent; --with-agent is still accepted."""

import pytest

from procwatch.cli import build_parser

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("flags", "runs_agent"), [([], True), (["--with-agent"], True), (["--no-agent"], False)])
def test_up_runs_the_agent_by_default(flags, runs_agent):
    args = build_parser().parse_args(["up", *flags])
    assert (not args.no_agent) is runs_agent
