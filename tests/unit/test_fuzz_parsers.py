"""Property-based tests of what a client's messages reach first (issue 28).

Whatever the text of a config or a control message (any text, any JSON value,
objects with the real field names and hostile values: huge strings, control and
bidi characters, escaped lone surrogates, NaN/Infinity, deep nesting, huge
integers, duplicate keys), the parsers and `plan_session` give a typed result
or an `ASRError` whose code is in STREAMING.md's error table and whose detail is
printable and short; never another exception. The oracle is `bench.fuzz`'s,
which runs the same targets coverage-guided for minutes (`python -m bench.fuzz`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.asr.models import BUNDLED_MODELS
from app.errors import ASRError, ConfigError
from app.languages import is_bcp47
from app.messages import ControlMessage, StreamConfig, parse_config, parse_control
from app.plan import SUPPORTED_ENCODINGS, SessionPlan, plan_session
from app.settings import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from bench.fuzz import (
    CONFIG_FIELDS,
    DOCUMENTED_CODES,
    HOSTILE_CHARS,
    HOSTILE_STRINGS,
    NUMBER_TOKENS,
    SURROGATE_ESCAPES,
    ConfigTarget,
    check_error,
    fuzz_settings,
    model_lookup,
    outcome,
    scripted_registry,
)

# A few hundred examples a property: the CI machine has 2 shared cores.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree; the @example lines keep the regressions
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONFIG_CODES = {"invalid_json", "unknown_field", "missing_field", "invalid_field_type"}
PLAN_CODES = {
    "unsupported_encoding",
    "unsupported_sample_rate",
    "unsupported_language",
    "unknown_backend",
}
CONTROL_CODES = {
    "invalid_json",
    "config_already_sent",
    "unknown_message_type",
    "invalid_control_message",
}
CONFIG_TARGET = ConfigTarget()
SETTINGS = fuzz_settings()
REGISTRY = scripted_registry(SETTINGS)

# --------------------------------------------------------------------------- strategies

hostile_chars = st.text(
    alphabet=st.sampled_from(HOSTILE_CHARS) | st.characters(categories=["Cc", "Cf", "Zl", "Zp"])
)
big_strings = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["x", "\n", "\u202e", "é", "\x1b"]),
    st.integers(0, 300_000),
)
strings = st.one_of(
    st.text(),
    hostile_chars,
    st.sampled_from(HOSTILE_STRINGS),
    big_strings,
    st.text(st.characters(categories=["Cs"])),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int, opening: str, closing: str, inner: str = "0") -> str:
    return opening * depth + inner + closing * depth


# JSON text of one value, including what json.dumps will not write.
fragments = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    strings.map(json.dumps),
    st.sampled_from(NUMBER_TOKENS + SURROGATE_ESCAPES),
    st.integers(4000, 6000).map(lambda n: "9" * n),
    st.integers(0, 100_000).map(lambda d: nested(d, "[", "]", "")),
    st.integers(0, 100_000).map(lambda d: nested(d, '{"a":', "}")),
)
keys = st.sampled_from((*CONFIG_FIELDS, "type")) | strings


@st.composite
def objects(draw: st.DrawFn, base: dict[str, str] | None = None) -> str:
    """A JSON object's text: ``base`` fields, then hostile pairs, duplicate keys allowed."""
    pairs = [(json.dumps(k), v) for k, v in (base or {}).items()]
    pairs += draw(st.lists(st.tuples(keys.map(json.dumps), fragments), max_size=6))
    pairs = draw(st.permutations(pairs)) if draw(st.booleans()) else pairs
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


VALID = {"sample_rate_hertz": "16000", "encoding": '"LINEAR16"'}
texts = st.one_of(st.text(), fragments, objects(), objects(VALID))
control_texts = st.one_of(
    st.text(),
    fragments,
    objects(),
    objects({"type": '"stop"'}),
    st.sampled_from(("stop", "keepalive", "finalize")).flatmap(
        lambda kind: objects({"type": json.dumps(kind)})
    ),
)


def documented(target: Any) -> str:
    """The oracle: ``"ok"`` or a documented code with a printable, short detail."""
    result = outcome(target)
    assert result == "ok" or result in DOCUMENTED_CODES
    return result


# --------------------------------------------------------------------------- the config


@FUZZ
@given(texts)
@example('{"sample_rate_hertz": 16000, "encoding": "LINEAR16", "model": "\\ud800"}')
@example('{"sample_rate_hertz": NaN, "encoding": "LINEAR16"}')
@example(
    '{"sample_rate_hertz": 16000, "encoding": "LINEAR16", "language_code": "'
    + "x" * 15_000_000
    + '"}'
)
def test_any_config_text_is_parsed_or_refused_as_documented(text: str) -> None:
    assert outcome(lambda: parse_config(text)) in {"ok"} | CONFIG_CODES
    documented(lambda: CONFIG_TARGET(text))


@FUZZ
@given(json_values)
def test_any_json_value_as_a_config(value: Any) -> None:
    text = json.dumps(value)
    assert outcome(lambda: parse_config(text)) in {"ok"} | CONFIG_CODES
    documented(lambda: CONFIG_TARGET(text))


@FUZZ
@given(st.sampled_from(CONFIG_FIELDS), fragments)
def test_each_field_with_a_hostile_value(field: str, value: str) -> None:
    text = '{"sample_rate_hertz":16000,"encoding":"LINEAR16",' + f'"{field}":{value}}}'
    documented(lambda: CONFIG_TARGET(text))


@FUZZ
@given(
    st.builds(
        dict,
        sample_rate_hertz=st.integers(),
        encoding=strings,
        language_code=st.none() | strings,
        backend=st.none() | strings | st.sampled_from(("counting", "broken")),
        model=st.none() | strings,
        interim_results=st.none() | st.booleans(),
        enable_automatic_punctuation=st.none() | st.booleans(),
        enable_word_time_offsets=st.booleans(),
    )
)
def test_plan_session_plans_or_names_the_field(fields: dict[str, Any]) -> None:
    try:
        config = StreamConfig.model_validate(fields)
    except ValueError:  # an unpaired surrogate: refused by `parse_config`, tested above
        return
    try:
        plan = plan_session(config, SETTINGS, REGISTRY)
    except ConfigError as exc:
        assert check_error(exc) in PLAN_CODES
        assert exc.field in CONFIG_FIELDS and f"'{exc.field}'" in exc.detail
        return
    assert isinstance(plan, SessionPlan)
    assert plan.encoding in SUPPORTED_ENCODINGS
    assert MIN_SAMPLE_RATE <= plan.sample_rate_hertz <= MAX_SAMPLE_RATE
    assert is_bcp47(plan.language_code)
    assert plan.request.backend in REGISTRY


@settings(FUZZ, max_examples=200)
@given(st.text() | strings)
@example("a" * 300)  # ENAMETOOLONG: was an internal_error (close 1011)
@example("~nobody-here")  # RuntimeError from expanduser: likewise
@example("~\x00")  # ValueError: likewise
def test_any_model_name_is_a_model_or_unknown_model(name: str) -> None:
    expected = "ok" if name in BUNDLED_MODELS else "unknown_model"  # bundled: not looked up
    assert documented(lambda: model_lookup(name, Path("/nonexistent"))) == expected


# --------------------------------------------------------------------------- control messages


@FUZZ
@given(control_texts)
@example('{"type": ' + "[" * 100_000 + "]" * 100_000 + "}")
@example('{"type": "stop", "type": "keepalive", "type": "finalize"}')
@example('{"type": "\\u202estop\\u0000"}')
def test_any_control_text_is_a_control_or_a_documented_notice(text: str) -> None:
    try:
        message = parse_control(text)
    except ASRError as exc:
        assert check_error(exc) in CONTROL_CODES
        assert not exc.fatal  # a bad control message never ends the session
        return
    assert isinstance(message, ControlMessage)
    assert message.type in {"stop", "keepalive", "finalize"}


@FUZZ
@given(json_values)
def test_any_json_value_as_a_control(value: Any) -> None:
    text = json.dumps(value)
    assert outcome(lambda: parse_control(text)) in {"ok"} | CONTROL_CODES
