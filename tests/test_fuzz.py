"""Property-based fuzzing of the x-oss-process language (hypothesis), with strategies derived from the
action tables (tests/fuzz_strategies.py).

Properties:
* parse() either returns a Pipeline or raises OssError with a 4xx status and a Code -- never another
  exception (valid, mutated and garbage strings; 10,000 strings per CI run across the three);
* a successful parse has a stable canonical form: parse(canonical) gives the same pipeline and the
  same canonical string;
* through the real middleware (werkzeug Client over tests/fixtures) every answer is a 200 (an image,
  or JSON for info / average-hue) or a well-formed OSS XML error with a 4xx status -- never a 5xx;
  resize-only pipelines give exactly the size imgmiddleware.ops.resize.geometry predicts.

Deterministic in CI (derandomize=True, no example database). For a longer, randomised run:
``HYPOTHESIS_PROFILE=long python3 -m pytest tests/test_fuzz.py`` (x20 examples, new seed each run).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgmiddleware import Config
from imgmiddleware.errors import OssError
from imgmiddleware.ops.resize import geometry
from imgmiddleware.process.parser import parse

from .conftest import FIXTURES, get, make_client, oss_error, size_of
from .fuzz_strategies import garbage_process, mutated_process, valid_process

LONG = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "long"
SCALE = 20 if LONG else 1

# Hypothesis examples per CI run. Each parser example is a batch of BATCH strings (hypothesis's
# per-example overhead dominates a parse), so 400 + 300 + 300 examples = 10,000 parsed strings;
# plus 400 middleware requests.
BATCH = 10
BUDGET = {"valid": 400, "mutated": 300, "garbage": 300, "middleware": 400}


def fuzz_settings(kind: str):
    return settings(max_examples=BUDGET[kind] * SCALE, deadline=None, derandomize=not LONG,
                    database=None, suppress_health_check=list(HealthCheck))


CONFIG = Config()
# The canonical string fills in defaults, so it can outgrow the length cap (found by fuzz/fuzz_parser.py);
# it is a cache key, never re-sent by a client, so it is re-parsed without the cap.
UNCAPPED = CONFIG.replace(max_process_length=1 << 30)


def check_parse(process: str) -> None:
    try:
        pipeline = parse(process, CONFIG, styles={})
    except OssError as exc:
        assert 400 <= exc.status < 500, (process, exc)
        assert exc.code and exc.message, (process, exc)
        return
    canonical = pipeline.canonical()
    again = parse(canonical, UNCAPPED, styles={})
    assert again.canonical() == canonical, (process, canonical)
    assert again == pipeline, (process, canonical)


@fuzz_settings("valid")
@given(st.lists(valid_process(), min_size=BATCH, max_size=BATCH))
def test_parse_valid_strings(processes):
    for process in processes:
        check_parse(process)


@fuzz_settings("mutated")
@given(st.lists(mutated_process(), min_size=BATCH, max_size=BATCH))
def test_parse_mutated_strings(processes):
    for process in processes:
        check_parse(process)


@fuzz_settings("garbage")
@given(st.lists(garbage_process(), min_size=BATCH, max_size=BATCH))
def test_parse_garbage_strings(processes):
    for process in processes:
        check_parse(process)


def test_strategies_reach_every_action_and_success():
    """The valid-string strategy is not vacuous: a good share of its strings parse, over every action."""
    from imgmiddleware.ops import ACTIONS

    results = []

    @settings(max_examples=800, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(valid_process(max_actions=1))
    def sample(process):
        results.append(process)

    sample()
    seen, parsed = set(), 0
    for process in results:
        try:
            pipeline = parse(process, CONFIG, styles={})
        except OssError:
            continue
        parsed += 1
        seen.update(pipeline.names())
    assert parsed > len(results) // 4, (parsed, len(results))
    assert seen == set(ACTIONS), set(ACTIONS) - seen


# --- through the middleware ------------------------------------------------------------------------

SOURCES = {"example.jpg": (400, 267), "example.gif": (500, 300), "nodejs-1024x768.png": (1024, 768)}
OUTPUT_ONLY = {"format", "quality", "interlace"}


@pytest.fixture(scope="module")
def fuzz_client():
    return make_client(FIXTURES)


def predicted_size(pipeline, key: str):
    """(w, h) for a pipeline of resizes (plus encode settings), "too-large" or None if unpredictable."""
    if not pipeline.steps or any(s.name not in {"resize"} | OUTPUT_ONLY for s in pipeline.steps):
        return None
    if any(s.name == "format" and s.args.get("value") == "gif" for s in pipeline.steps):
        return None
    width, height = SOURCES[key]
    for step in pipeline.steps:
        if step.name != "resize":
            continue
        geo = geometry(width, height, dict(step.args), never_enlarge=key.endswith(".gif"))
        if geo is None:
            continue
        for w, h in (geo.scaled, geo.output):
            if max(w, h) > CONFIG.max_output_side or w * h > CONFIG.max_output_pixels:
                return "too-large"
        width, height = geo.output
    return width, height


@fuzz_settings("middleware")
@given(st.sampled_from(sorted(SOURCES)),
       st.one_of(valid_process(cap=1200, max_actions=3), valid_process(cap=1200, max_actions=3, clean=True),
                 valid_process(cap=1200, max_actions=2, clean=True, resize_only=True),
                 mutated_process(cap=1200), garbage_process()))
def test_middleware_never_5xx(fuzz_client, key, process):
    response = get(fuzz_client, key, process)
    assert response.status_code < 500, (key, process, response.get_data()[:300])
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        fields = oss_error(response)
        assert fields["Code"] and fields["Message"], (key, process)
        return
    body = response.get_data()
    if response.headers["Content-Type"].startswith("application/json"):
        json.loads(body)
        return
    assert response.headers["Content-Type"].startswith("image/"), (key, process)
    try:
        pipeline = parse(process, CONFIG, styles={})
    except OssError:
        raise AssertionError(f"200 for a string parse() rejects: {process!r}") from None
    expected = predicted_size(pipeline, key)
    assert expected != "too-large", (key, process)
    if expected is not None:
        assert size_of(body) == expected, (key, process)
