"""What people read: every message names the server, the process, what happened, the value
against the threshold and since when; Discord's and Slack's size limits hold."""

from __future__ import annotations

import orjson
import pytest

from procwatch_notify import render as r
from procwatch_notify.render import embed_chars, fit_embed, render, render_digest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("channel_type", ["slack", "discord", "email"])
def test_each_message_says_where_what_value_threshold_and_since(channel_type, make_alert):
    event = make_alert("process_cpu_high", value=93.5, threshold=50.0, process="postgres", host="db-7")
    body = render(channel_type, "standard", event).body.decode()
    for fact in ("db-7", "postgres", "CPU is above its threshold", "93.5", "threshold 50", "since 2026-12-01 11:57:08 UTC"):
        assert fact in body, (channel_type, fact)


def test_down_says_none_running(make_alert):
    text = render("slack", "standard", make_alert("process_down", value=0.0)).body.decode()
    assert "value 0 running" in text and "expected at least 1" in text


def test_count_out_of_range_names_the_bound_crossed(make_alert):
    below = render("slack", "standard", make_alert("process_count_out_of_range", value=1.0, threshold=3.0)).body.decode()
    assert "nginx process count is out of range on web-1" in below and "1 running (expected at least 3)" in below
    above = render("email", "standard", make_alert("process_count_out_of_range", value=9.0, threshold=4.0))
    assert "9 running (expected at most 4)" in above.body.decode()
    back = render("slack", "standard", make_alert("process_count_out_of_range", "resolved", value=3.0)).body.decode()
    assert "process count is back in range" in back and "3 running" in back


def test_slack_always_has_text_and_blocks(make_alert):
    body = orjson.loads(render("slack", "standard", make_alert("process_down", "resolved")).body)
    assert "nginx is back up on web-1" in body["text"] and body["blocks"]


def test_email_has_a_subject(make_alert):
    request = render("email", "standard", make_alert())
    assert request.subject == "[procwatch] nginx is down on web-1"


def test_discord_embed_stays_within_limits_however_long_the_names(make_alert):
    event = make_alert(process="p" * 100, host="h" * 5000)
    body = orjson.loads(render("discord", "standard", event).body)
    (embed,) = body["embeds"]
    assert len(embed["title"]) <= r.DISCORD_TITLE
    assert len(embed["description"]) <= r.DISCORD_DESCRIPTION
    assert all(len(f["value"]) <= r.DISCORD_FIELD_VALUE for f in embed["fields"])
    assert embed_chars(embed) <= r.DISCORD_TOTAL and len(body["content"]) <= 2000


def test_fit_embed_cuts_fields_and_total():
    embed = fit_embed({"title": "t" * 300, "description": "d" * 9000,
                       "fields": [{"name": "n" * 300, "value": "v" * 2000} for _ in range(30)]})
    assert 0 < len(embed["fields"]) <= r.DISCORD_FIELDS and len(embed["title"]) == r.DISCORD_TITLE
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= r.DISCORD_FIELD_VALUE for f in embed["fields"])
    assert embed_chars(embed) <= r.DISCORD_TOTAL and embed["description"].startswith("ddd")
    small = fit_embed({"title": "t", "fields": [{"name": "n", "value": "v"}] * 40})
    assert len(small["fields"]) == r.DISCORD_FIELDS


def test_digest_lists_the_first_40_and_counts_the_rest(make_alert):
    events = [make_alert(process=f"worker-{i}", n=i) for i in range(200)]
    slack = orjson.loads(render_digest("slack", events).body)
    assert slack["text"] == "200 alerts on web-1: 200 firing"
    joined = "\n".join(b["text"]["text"] for b in slack["blocks"])
    assert "worker-0 is down" in joined and "worker-39 is down" in joined and "worker-40 " not in joined
    assert "… and 160 more" in joined
    assert all(len(b["text"]["text"]) <= r.SLACK_SECTION for b in slack["blocks"])
    discord = orjson.loads(render_digest("discord", events).body)
    (embed,) = discord["embeds"]
    assert embed_chars(embed) <= r.DISCORD_TOTAL and len(embed["description"]) <= r.DISCORD_DESCRIPTION
    assert "more" in embed["description"]


def test_server_level_alert_without_process(make_alert):
    event = make_alert("process_down").model_copy(update={"type": "server_offline", "process": None,
                                                          "value": 95.0, "threshold": 60.0})
    body = render("email", "standard", event).body.decode()
    assert "web-1 is offline" in body and "value 95 s since last seen against threshold 60" in body
