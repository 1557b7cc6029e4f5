"""procwatch_contracts.fast mirrors messages.AgentSample and SampleRecorded: whatever the fast
decoder accepts, the pydantic model accepts with the same values (it may refuse more; the model
then decides), and whatever the model accepts, `parse_*` returns as the fast type with the same
values (the services' one runtime type); what the model refuses, `parse_*` refuses with its error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from procwatch_contracts.fast import (
    ProcessAlertConfigView,
    RecordedSampleView,
    SampleRecordedView,
    decode_agent_sample,
    decode_sample_recorded,
    encode_sample_recorded,
    parse_agent_sample,
    parse_sample_recorded,
)
from procwatch_domain.rules import SETTING_DEFAULTS, SETTINGS
from procwatch_contracts.messages import (
    MAX_CPU_PCT,
    MAX_MEMORY_PCT,
    AgentSample,
    ProcessAlertConfig,
    RecordedSample,
    SampleRecorded,
)

pytestmark = pytest.mark.unit


def _reading(**over) -> dict:
    r = {"process_name": "nginx", "count": 2, "cpu_pct": 1.5, "memory_pct": 0.25, "oldest_start_unix": 1716566400}
    r.update(over)
    return r


def _sample(**over) -> dict:
    s = {"v": 1, "server_id": 7, "agent_version": "1.2.3", "sampled_at": "2026-11-28T10:00:00Z",
         "processes": [_reading()]}
    s.update(over)
    return s


def _model(data: bytes) -> AgentSample | None:
    try:
        return AgentSample.model_validate_json(data)
    except ValidationError:
        return None


def assert_parsed_like_the_model(data: bytes, model: AgentSample | None) -> None:
    """parse_agent_sample: the model's verdict, as the fast type."""
    if model is None:
        with pytest.raises(ValidationError):
            parse_agent_sample(data)
        return
    assert_same_values(parse_agent_sample(data), model)


def assert_same_values(fast, model: AgentSample) -> None:
    assert (fast.v, fast.server_id, fast.agent_version, fast.sampled_at) == (
        model.v, model.server_id, model.agent_version, model.sampled_at)
    assert fast.sampled_at.utcoffset() == model.sampled_at.utcoffset()
    assert len(fast.processes) == len(model.processes)
    for f, m in zip(fast.processes, model.processes):
        for name in ("process_name", "count", "cpu_pct", "memory_pct", "oldest_start_unix"):
            fv, mv = getattr(f, name), getattr(m, name)
            assert fv == mv and type(fv) is type(mv), (name, fv, mv)


def assert_mirrors(data: bytes) -> None:
    fast = decode_agent_sample(data)
    model = _model(data)
    assert_parsed_like_the_model(data, model)
    if fast is None:
        return  # refusing is always allowed: the model decides
    assert model is not None, f"fast decoder accepted what AgentSample refuses: {data!r}"
    assert_same_values(fast, model)


def test_a_plain_message_takes_the_fast_path_with_the_models_values():
    data = orjson.dumps(_sample(processes=[_reading(), _reading(process_name="redis", oldest_start_unix=None)]))
    assert decode_agent_sample(data) is not None
    assert_mirrors(data)


EDGE_CASES = {
    "bool count": _sample(processes=[_reading(count=True)]),
    "float count": _sample(processes=[_reading(count=1.0)]),
    "string count": _sample(processes=[_reading(count="1")]),
    "negative count": _sample(processes=[_reading(count=-1)]),
    "count over int4": _sample(processes=[_reading(count=2**31)]),
    "int percent": _sample(processes=[_reading(cpu_pct=3)]),
    "negative percent": _sample(processes=[_reading(memory_pct=-0.1)]),
    "bool percent": _sample(processes=[_reading(cpu_pct=False)]),
    "cpu at its bound": _sample(processes=[_reading(cpu_pct=MAX_CPU_PCT)]),
    "cpu beyond its bound": _sample(processes=[_reading(cpu_pct=MAX_CPU_PCT * 1.0001)]),
    "cpu 1e300": _sample(processes=[_reading(cpu_pct=1e300)]),
    "memory at its bound": _sample(processes=[_reading(memory_pct=MAX_MEMORY_PCT)]),
    "memory beyond its bound": _sample(processes=[_reading(memory_pct=MAX_MEMORY_PCT + 1)]),
    "oldest over bound": _sample(processes=[_reading(oldest_start_unix=2**62 + 1)]),
    "missing oldest": _sample(processes=[{k: v for k, v in _reading().items() if k != "oldest_start_unix"}]),
    "extra reading field": _sample(processes=[_reading(pid=1)]),
    "empty name": _sample(processes=[_reading(process_name="")]),
    "long name": _sample(processes=[_reading(process_name="x" * 101)]),
    "unicode name at limit": _sample(processes=[_reading(process_name="é" * 100)]),
    "v 2": _sample(v=2),
    "v true": _sample(v=True),
    "v string": _sample(v="1"),
    "server 0": _sample(server_id=0),
    "server too big": _sample(server_id=2**63),
    "server as float": _sample(server_id=7.0),
    "empty version": _sample(agent_version=""),
    "long version": _sample(agent_version="v" * 65),
    "extra field": _sample(hostname="web-01"),
    "naive time": _sample(sampled_at="2026-11-28T10:00:00"),
    "offset time": _sample(sampled_at="2026-11-28T11:00:00+01:00"),
    "space time": _sample(sampled_at="2026-11-28 10:00:00Z"),
    "nanosecond time": _sample(sampled_at="2026-11-28T10:00:00.123456789Z"),
    "unix string time": _sample(sampled_at="1700000000"),
    "numeric time": _sample(sampled_at=1700000000),
    "garbage time": _sample(sampled_at="yesterday"),
    "no processes": _sample(processes=[]),
    "processes null": _sample(processes=None),
    "too many processes": _sample(processes=[_reading(process_name=f"p{i}") for i in range(1001)]),
    "at the process limit": _sample(processes=[_reading(process_name=f"p{i}") for i in range(1000)]),
}


@pytest.mark.parametrize("case", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_are_never_accepted_by_the_fast_path_alone(case):
    assert_mirrors(json.dumps(case).encode())


@pytest.mark.parametrize("name", ["cpu beyond its bound", "cpu 1e300", "memory beyond its bound"])
def test_readings_beyond_the_bounds_are_refused_by_both_with_the_models_reason(name):
    data = json.dumps(EDGE_CASES[name]).encode()
    assert decode_agent_sample(data) is None
    with pytest.raises(ValidationError, match="less than or equal to"):
        parse_agent_sample(data)


@pytest.mark.parametrize("name", ["int percent", "unicode name at limit", "offset time", "nanosecond time",
                                  "no processes", "at the process limit", "cpu at its bound", "memory at its bound"])
def test_valid_edge_cases_take_the_fast_path(name):
    data = json.dumps(EDGE_CASES[name]).encode()
    assert decode_agent_sample(data) is not None
    assert _model(data) is not None


@pytest.mark.parametrize("raw", [
    b'{"v":1,"server_id":7,"agent_version":"1","sampled_at":"2026-11-28T10:00:00Z","processes":'
    b'[{"process_name":"a","count":1,"cpu_pct":1e400,"memory_pct":1,"oldest_start_unix":null}]}',
    b'{"v":1,"server_id":7,"agent_version":"1","sampled_at":"2026-11-28T10:00:00Z","processes":'
    b'[{"process_name":"a","count":1,"cpu_pct":NaN,"memory_pct":1,"oldest_start_unix":null}]}',
    b'{"v":1,"server_id":7,"agent_version":"1","sampled_at":"2026-11-28T10:00:00Z","processes":'
    b'[{"process_name":"a\\ud800","count":1,"cpu_pct":1,"memory_pct":1,"oldest_start_unix":null}]}',
    b'{"v":1,"server_id":7,"server_id":8,"agent_version":"1","sampled_at":"2026-11-28T10:00:00Z","processes":[]}',
    b'{"v":1,"server_id":7,"agent_version":"1","sampled_at":"2026-11-28T10:00:00Z","processes":[]} trailing',
    b'[1, 2]',
    b'',
])
def test_raw_json_oddities(raw):
    assert_mirrors(raw)


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
_maybe_bad_int = st.one_of(st.integers(min_value=-5, max_value=2**63 + 5), _json_scalars)
_maybe_bad_float = st.one_of(st.floats(min_value=-1, max_value=1e308, allow_nan=False), _json_scalars)
_times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-28T10:00:00Z", "2026-11-28T10:00Z", "2026-11-28", "1700000000", "x"]),
    _json_scalars,
)


@st.composite
def _readings(draw):
    r = {
        "process_name": draw(st.one_of(st.text(min_size=0, max_size=102), _json_scalars)),
        "count": draw(_maybe_bad_int),
        "cpu_pct": draw(_maybe_bad_float),
        "memory_pct": draw(_maybe_bad_float),
        "oldest_start_unix": draw(st.one_of(st.none(), _maybe_bad_int)),
    }
    if draw(st.booleans()) and draw(st.booleans()):
        del r[draw(st.sampled_from(sorted(r)))]
    if draw(st.integers(0, 9)) == 0:
        r["extra"] = 1
    return r


@st.composite
def _samples(draw):
    s = {
        "v": draw(st.one_of(st.just(1), _json_scalars)),
        "server_id": draw(st.one_of(st.integers(min_value=-1, max_value=2**63 + 1), _json_scalars)),
        "agent_version": draw(st.one_of(st.text(max_size=66), _json_scalars)),
        "sampled_at": draw(_times),
        "processes": draw(st.one_of(st.lists(_readings(), max_size=4), _json_scalars)),
    }
    if draw(st.integers(0, 9)) == 0:
        del s[draw(st.sampled_from(sorted(s)))]
    return s


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_samples())
def test_generated_messages(sample):
    assert_mirrors(json.dumps(sample).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(_readings(), min_size=1, max_size=3))
def test_generated_valid_envelopes(readings):
    assert_mirrors(json.dumps(_sample(processes=readings)).encode())


# --- the SampleRecorded encoder ------------------------------------------------------------



@pytest.mark.parametrize("mirror, model", [
    (ProcessAlertConfigView, ProcessAlertConfig), (RecordedSampleView, RecordedSample), (SampleRecordedView, SampleRecorded),
])
def test_encoder_structs_have_the_models_fields_in_order(mirror, model):
    assert mirror.__struct_fields__ == tuple(model.model_fields)


_config = st.builds(ProcessAlertConfigView, **{
    s.name: st.booleans() if s.is_flag else st.integers(0, 1000) if s.type is int else st.floats(0, 1000)
    for s in SETTINGS})
_aware = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).flatmap(
    lambda d: st.sampled_from([d.replace(tzinfo=UTC), d.replace(tzinfo=ZoneInfo("Etc/UTC")),
                               d.replace(tzinfo=timezone(timedelta(hours=5, minutes=30)))]))
_ints = st.integers(0, 2**62)
_recorded = st.builds(
    RecordedSampleView, _ints, _ints, st.text(min_size=1, max_size=100), st.integers(0, 2**31 - 1),
    st.floats(0, 1e6), st.floats(0, 1e6), st.none() | _ints, _aware, st.none() | st.integers(0, 2**31 - 1),
    st.none() | _ints, st.none() | _aware, st.booleans(), _config, st.none() | st.sampled_from(["down", "cpu,memory"]),
)


_events = st.builds(
    SampleRecordedView, v=st.just(1), server_id=_ints, hostname=st.text(max_size=255), user_id=_ints,
    agent_version=st.text(min_size=1, max_size=64), sampled_at=_aware, samples=st.lists(_recorded, max_size=4),
    server_seen_at=st.none() | _aware,
)


@settings(max_examples=200, deadline=None)
@given(_events)
def test_encoded_events_are_valid_sample_recorded_with_the_same_values(event):
    model = SampleRecorded.model_validate_json(encode_sample_recorded(event))
    assert model.model_dump() == msgspec.to_builtins(event, builtin_types=(datetime,))


@settings(max_examples=200, deadline=None)
@given(_events)
def test_encoded_events_decode_on_the_fast_path_to_the_same_event(event):
    data = encode_sample_recorded(event)
    decoded = decode_sample_recorded(data)
    if b"\\u" not in data:
        assert decoded == event
    assert_event_mirrors(data)


def assert_event_mirrors(data: bytes) -> None:
    fast = decode_sample_recorded(data)
    try:
        model = SampleRecorded.model_validate_json(data)
    except ValidationError:
        model = None
    # parse_sample_recorded: the model's verdict, as the fast type with the model's values.
    if model is None:
        with pytest.raises(ValidationError):
            parse_sample_recorded(data)
    else:
        parsed = parse_sample_recorded(data)
        assert isinstance(parsed, SampleRecordedView)
        assert model.model_dump() == msgspec.to_builtins(parsed, builtin_types=(datetime,))
    if fast is None:
        return  # refusing is always allowed: the model decides
    if model is None:
        raise AssertionError(f"fast decoder accepted what SampleRecorded refuses: {data!r}")
    assert model.model_dump() == msgspec.to_builtins(fast, builtin_types=(datetime,))
    for f, m in zip(fast.samples, model.samples):
        for name in RecordedSample.model_fields:
            if name != "config":
                assert type(getattr(f, name)) is type(getattr(m, name)), name


def _event_dict(**over) -> dict:
    sample = {"sample_id": 1, "watched_process_id": 2, "process_name": "nginx", "count": 1, "cpu_pct": 1.5,
              "memory_pct": 2.5, "oldest_start_unix": 100, "recorded_at": "2026-11-28T10:00:00Z",
              "previous_count": None, "previous_oldest_start_unix": None, "previous_recorded_at": None,
              "is_latest": True, "config": {**SETTING_DEFAULTS, "alert_on_restart": True, "cpu_threshold_pct": 90.0,
                                            "memory_threshold_pct": 90.0}, "alerted_state": "cpu"}
    event = {"v": 1, "server_id": 3, "hostname": "web-01", "user_id": 4, "agent_version": "1",
             "sampled_at": "2026-11-28T10:00:00Z", "samples": [sample], "server_seen_at": "2026-11-28T10:00:01Z"}
    for key, value in over.items():
        target = sample if key in sample else event
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return event


_DELETE = object()
_event_fields = [*SampleRecorded.model_fields, *RecordedSample.model_fields]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_event_fields), st.one_of(_json_scalars, st.just(_DELETE), st.just({"x": 1}), st.just([])),
       st.booleans())
def test_decoding_a_mutated_event_never_accepts_what_the_model_refuses(field_name, value, extra):
    event = _event_dict(**{field_name: value})
    if extra:
        event["unexpected"] = 1
    assert_event_mirrors(json.dumps(event).encode())


def test_a_plain_event_takes_the_fast_path_and_v_may_be_omitted():
    assert decode_sample_recorded(json.dumps(_event_dict()).encode()) is not None
    no_v = _event_dict(v=_DELETE)
    assert decode_sample_recorded(json.dumps(no_v).encode()).v == 1
    assert_event_mirrors(json.dumps(no_v).encode())
