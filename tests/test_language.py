"""The x-oss-process language (spec §1.1, §1.2): the twelve grammar rules, canonical strings, styles,
the length cap and which spelling of the parameter triggers processing at all.

Mostly unit tests of :func:`imgmiddleware.process.parser.parse`; the request-surface rules (query vs
header, exact lower-case name, percent-encoding) go through the middleware.
"""

from __future__ import annotations


import pytest

from imgmiddleware import Config
from imgmiddleware.errors import OssError
from imgmiddleware.ops import ACTIONS
from imgmiddleware.ops.base import (PIXEL, ActionSpec, Base64Text, IntRange, Param,
                                    decode_base64_lenient)
from imgmiddleware.process.parser import parse

from .conftest import closed, fixture_bytes, format_of, get, make_client, oss_error, size_of

CONFIG = Config()


def parsed(process: str, config: Config = CONFIG):
    return parse(process, config)


def canon(process: str) -> str:
    return parse(process, CONFIG).canonical()


def error_of(process: str, config: Config = CONFIG) -> OssError:
    with pytest.raises(OssError) as info:
        parse(process, config)
    return info.value


def only_args(process: str) -> dict:
    pipeline = parsed(process)
    assert len(pipeline.steps) == 1
    return dict(pipeline.steps[0].args)


# --- rule 1: the image/ prefix -----------------------------------------------------------------------

@pytest.mark.parametrize("process", ["image/", "image//", "image///"])
def test_image_prefix_alone_is_ec_212(process):
    err = error_of(process)
    assert (err.status, err.code, err.ec) == (400, "InvalidArgument", "0040-00000212")


@pytest.mark.parametrize("process", ["resize,w_100", "Image/resize,w_100", "img/resize,w_100",
                                     "image", "/image/resize,w_100"])
def test_image_prefix_is_mandatory(process):
    err = error_of(process)
    assert err.status == 400
    assert err.code == "InvalidArgument"


def test_image_prefix_alone_through_the_middleware(client):
    fields = oss_error(get(client, "example.jpg", "image/"))
    assert (fields["status"], fields["EC"], fields["header_ec"]) == (400, "0040-00000212", "0040-00000212")


# --- rule 2: left to right, repeats allowed ------------------------------------------------------------

def test_actions_keep_their_written_order_and_may_repeat():
    pipeline = parsed("image/resize,w_100/rotate,90/resize,w_50/rotate,180")
    assert pipeline.names() == ["resize", "rotate", "resize", "rotate"]
    assert [dict(s.args).get("w") for s in pipeline.steps] == [100, None, 50, None]
    assert [dict(s.args).get("value") for s in pipeline.steps] == [None, 90, None, 180]


def test_order_changes_the_result(client):
    # rotate then resize: 267x400 -> width 100 -> 100x150; resize then rotate: 100x67 -> 67x100.
    first = get(client, "example.jpg", "image/rotate,90/resize,w_100")
    second = get(client, "example.jpg", "image/resize,w_100/rotate,90")
    assert first.status_code == second.status_code == 200
    assert size_of(first.data) == (100, 150)
    assert size_of(second.data) == (67, 100)


def test_repeated_action_runs_each_time(client):
    response = get(client, "example.jpg", "image/resize,w_200/resize,w_100")
    assert response.status_code == 200
    assert size_of(response.data) == (100, 67)


# --- rule 3: parameter order is irrelevant --------------------------------------------------------------

@pytest.mark.parametrize("a, b", [
    ("image/resize,h_100,m_lfit", "image/resize,m_lfit,h_100"),
    ("image/crop,x_10,y_20,w_100,h_50,g_se", "image/crop,g_se,h_50,w_100,y_20,x_10"),
    ("image/resize,m_pad,w_100,h_80,color_ff0000", "image/resize,color_ff0000,h_80,w_100,m_pad"),
])
def test_parameter_order_gives_the_same_pipeline(a, b):
    assert canon(a) == canon(b)
    assert parsed(a).steps[0].args == parsed(b).steps[0].args


def test_parameter_order_gives_the_same_image(client):
    a = get(client, "example.jpg", "image/resize,h_100,m_mfit,w_120")
    b = get(client, "example.jpg", "image/resize,w_120,m_mfit,h_100")
    assert a.status_code == b.status_code == 200
    assert a.data == b.data
    assert size_of(a.data) == (150, 100)


# --- rule 4 + 12: split at the first "_", lenient base64 ----------------------------------------------

def test_item_splits_at_the_first_underscore_only():
    err = error_of("image/resize,w_1_0")            # the value is "1_0", not "1"
    assert err.ec == "0040-00000312"
    assert err.message == "The value: 1_0 of parameter: w is invalid."


B64_PROBE = ActionSpec(
    name="b64probe",
    role=PIXEL,
    params=(
        Param("text", Base64Text(max_bytes=64), "0040-00000257", code="BadRequest"),
        Param("n", IntRange(0, 10), None),
    ),
)


@pytest.fixture
def b64_action(monkeypatch):
    """A keyed action with a base64 parameter, registered only for the test (independent of watermark)."""
    monkeypatch.setitem(ACTIONS, B64_PROBE.name, B64_PROBE)
    return B64_PROBE.name


# "图片>>?!" encodes to bytes whose base64 holds every alphabet-dependent character and padding.
TEXT = "图片>>?!"
SPELLINGS = [
    "5Zu-54mHPj4_IQ",       # URL-safe, unpadded (what OSS documents)
    "5Zu-54mHPj4_IQ==",     # URL-safe, padded (Go v2 SDK)
    "5Zu+54mHPj4/IQ==",     # standard alphabet, padded
    "5Zu+54mHPj4/IQ",       # standard alphabet, unpadded (ali-oss test)
    "5Zu 54mHPj4/IQ",       # a '+' that arrived as a space (form decoding on the way)
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_base64_decodes_leniently(spelling):
    assert decode_base64_lenient(spelling) == TEXT.encode("utf-8")
    assert Base64Text().convert(spelling) == TEXT


@pytest.mark.parametrize("value, text", [
    ("SGVsbG8g5Zu-54mH5pyN5YqhIQ", "Hello 图片服务!"),   # the oss2 watermark test value
    ("ZGVzdC5qcGc=", "dest.jpg"),                        # saveas o_ as the Go v2 SDK sends it
    ("ZGVzdC5qcGc", "dest.jpg"),
])
def test_base64_known_sdk_values(value, text):
    assert Base64Text().convert(value) == text


@pytest.mark.parametrize("bad", ["", "a", "!!!!", "ab$d", "5Zu-54mHPj4_I", "/w"])
def test_base64_rejects_what_is_not_base64(bad):
    # "/w" is valid base64 of b"\xff", which is not UTF-8 text.
    with pytest.raises(ValueError):
        Base64Text().convert(bad)


def test_base64_text_length_cap():
    assert Base64Text(max_bytes=3).convert("YWJj") == "abc"
    with pytest.raises(ValueError):
        Base64Text(max_bytes=3).convert("YWJjZA")


# Inside a process string a standard '/' would end the action, so only '+' comes from that alphabet.
IN_PROCESS_SPELLINGS = [
    "5Zu-54mHPj4_IQ",
    "5Zu-54mHPj4_IQ==",
    "5Zu+54mHPj4_IQ==",
    "5Zu 54mHPj4_IQ",
]


@pytest.mark.parametrize("spelling", IN_PROCESS_SPELLINGS)
def test_base64_value_with_underscore_dash_equals_survives_the_item_split(b64_action, spelling):
    args = only_args(f"image/{b64_action},n_3,text_{spelling}")
    assert args == {"text": TEXT, "n": 3}


def test_base64_spellings_share_one_canonical_string(b64_action):
    strings = {canon(f"image/{b64_action},text_{s}") for s in IN_PROCESS_SPELLINGS}
    assert strings == {f"image/{b64_action},text_5Zu-54mHPj4_IQ"}


def test_undecodable_base64_is_bad_request_with_its_ec(b64_action):
    err = error_of(f"image/{b64_action},text_@@@@")
    assert (err.status, err.code, err.ec) == (400, "BadRequest", "0040-00000257")
    assert err.message == "Input is not base64 decoding."


# --- rule 5: case-sensitive names -------------------------------------------------------------------

@pytest.mark.parametrize("process", ["image/Resize,w_100", "image/RESIZE,w_100", "image/Rotate,90",
                                     "image/auto-Orient,1", "image/roundedcorners,r_10",
                                     "image/rounded_corners,r_10", "image/averagehue"])
def test_action_names_are_case_sensitive_and_exact(process):
    err = error_of(process)
    assert (err.status, err.code, err.ec) == (400, "InvalidArgument", "0040-00000213")


def test_q_and_Q_are_different_parameters():
    assert only_args("image/quality,q_80") == {"q": 80}
    assert only_args("image/quality,Q_80") == {"Q": 80}
    assert canon("image/quality,q_80") != canon("image/quality,Q_80")
    assert error_of("image/quality,q_200").ec == "0040-00000309"
    assert error_of("image/quality,Q_200").ec == "0040-00000308"


@pytest.mark.parametrize("process", ["image/resize,W_100", "image/resize,P_50", "image/resize,M_fixed"])
def test_upper_case_key_is_an_unknown_key_not_an_alias(process):
    # W / P / M are not resize keys: ignored, so resize is left with no parameter at all.
    err = error_of(process)
    assert err.ec == "0040-00000322"


# --- rule 6: unknown action -------------------------------------------------------------------------

@pytest.mark.parametrize("process", ["image/slim,1", "image/resize,w_100/gray", "image/flip,1",
                                     "image/Watermark,text_SGVsbG8"])
def test_unknown_action_is_ec_213(process):
    err = error_of(process)
    assert (err.status, err.code, err.ec) == (400, "InvalidArgument", "0040-00000213")


def test_one_unknown_action_fails_the_whole_pipeline(client):
    fields = oss_error(get(client, "example.jpg", "image/resize,w_100/slim,1/rotate,90"))
    assert (fields["status"], fields["EC"]) == (400, "0040-00000213")


# --- rule 7: unknown keys ignored ---------------------------------------------------------------------

def test_unknown_key_is_ignored():
    pipeline = parsed("image/crop,w_100,h_100,x_100,y_100,r_1")
    assert "r" not in pipeline.steps[0].args
    assert canon("image/crop,w_100,h_100,x_100,y_100,r_1") == canon("image/crop,w_100,h_100,x_100,y_100")
    assert "r_" not in canon("image/crop,w_100,h_100,x_100,y_100,r_1")


def test_unknown_key_is_ignored_through_the_middleware(client):
    response = get(client, "example.jpg", "image/crop,w_100,h_100,x_100,y_100,r_1")   # §10 #3
    assert response.status_code == 200
    assert size_of(response.data) == (100, 100)


def test_bare_word_in_a_keyed_action_is_ignored():
    assert canon("image/resize,w_100,bogus") == canon("image/resize,w_100")


# --- rule 8: duplicates, last wins -------------------------------------------------------------------

def test_duplicate_parameter_last_one_wins():
    assert only_args("image/resize,w_100,w_200")["w"] == 200
    assert only_args("image/resize,m_fixed,w_10,h_10,m_pad")["m"] == "pad"
    assert canon("image/resize,w_100,w_200") == canon("image/resize,w_200")


def test_duplicate_parameter_through_the_middleware(client):
    response = get(client, "example.jpg", "image/resize,w_300,w_100")
    assert size_of(response.data) == (100, 67)


# --- rule 9: trailing comma -------------------------------------------------------------------------

@pytest.mark.parametrize("with_comma, without", [
    ("image/resize,w_100,", "image/resize,w_100"),
    ("image/rotate,90,", "image/rotate,90"),
    ("image/resize,m_pad,w_100,h_100,color_ff6a00,", "image/resize,m_pad,w_100,h_100,color_ff6a00"),
    ("image/resize,w_100,/rotate,90,", "image/resize,w_100/rotate,90"),
])
def test_trailing_comma_is_accepted(with_comma, without):
    assert canon(with_comma) == canon(without)


def test_trailing_comma_through_the_middleware(client):
    response = get(client, "example.jpg", "image/resize,m_pad,w_100,h_100,color_ff6a00,")
    assert response.status_code == 200
    assert size_of(response.data) == (100, 100)


# --- rule 10: integers only, no negatives where not allowed -------------------------------------------

@pytest.mark.parametrize("process, ec, key, value", [
    ("image/resize,h_abc", "0040-00000313", "h", "abc"),
    ("image/resize,w_1.5", "0040-00000312", "w", "1.5"),
    ("image/resize,w_", "0040-00000312", "w", ""),
    ("image/resize,w_-100", "0040-00000312", "w", "-100"),
    ("image/resize,w_1e2", "0040-00000312", "w", "1e2"),
    ("image/crop,h_abc", "0040-00000226", "h", "abc"),
    ("image/crop,w_-5", "0040-00000225", "w", "-5"),
    ("image/rotate,abc", "0040-00000217", "rotate", "abc"),
    ("image/rotate,-90", "0040-00000217", "rotate", "-90"),
    ("image/rotate,9O", "0040-00000217", "rotate", "9O"),
    ("image/indexcrop,y_abc", "0040-00000224", "y", "abc"),
    ("image/indexcrop,x_10,i_-1", "0040-00000229", "i", "-1"),
])
def test_non_integer_or_negative_value_raises_that_parameters_ec(process, ec, key, value):
    err = error_of(process)
    assert (err.status, err.code, err.ec) == (400, "InvalidArgument", ec)
    assert err.message == f"The value: {value} of parameter: {key} is invalid."


def test_leading_zeros_are_the_same_integer():
    assert only_args("image/resize,w_0100")["w"] == 100
    assert only_args("image/rotate,090")["value"] == 90


# --- rule 11: required value missing -----------------------------------------------------------------

@pytest.mark.parametrize("process, ec", [
    ("image/rotate", "0040-00000216"),
    ("image/rotate,", "0040-00000216"),
    ("image/interlace", "0040-00000281"),
    ("image/quality", "0040-00000307"),
    ("image/quality,", "0040-00000307"),
    ("image/resize", "0040-00000322"),
    ("image/resize,", "0040-00000322"),
    ("image/resize,m_fixed,limit_0", "0040-00000322"),   # no size parameter at all
    ("image/auto-orient", "0040-00000214"),     # on when absent, yet an error when bare (issue 18)
    ("image/format", "0040-00000207"),
    ("image/bright", "0040-00000245"),
    ("image/sharpen", "0040-00000279"),
])
def test_required_value_missing_raises_its_ec(process, ec):
    err = error_of(process)
    assert err.status == 400
    assert err.ec == ec


def test_actions_without_required_values_parse_bare():
    assert parsed("image/info").names() == ["info"]
    assert parsed("image/average-hue").names() == ["average-hue"]


# --- canonical strings --------------------------------------------------------------------------------

@pytest.mark.parametrize("spellings", [
    ["image/resize,w_100", "image/resize,m_lfit,w_100,limit_1", "image/resize,limit_1,w_100,m_lfit",
     "image/resize,w_0100", "image/resize,w_100,", "image/resize,w_100,color_FFFFFF",
     "image/resize,w_100,color_ffffff,foo_1", "image/resize,w_5,w_100"],
    ["image/rotate,90", "image/rotate,090", "image/rotate,90,"],
    ["image/crop,w_100,h_100", "image/crop,h_100,w_100,x_0,y_0,g_nw", "image/crop,w_100,h_100,r_1"],
    ["image/resize,m_pad,w_10,h_20,color_AbCdEf", "image/resize,color_abcdef,h_20,m_pad,w_10"],
    ["image/quality,q_80", "image/quality,q_080"],
])
def test_equivalent_strings_share_one_canonical_string(spellings):
    assert len({canon(s) for s in spellings}) == 1


@pytest.mark.parametrize("a, b", [
    ("image/resize,w_100", "image/resize,w_101"),
    ("image/resize,w_100", "image/resize,h_100"),
    ("image/resize,w_100", "image/resize,w_100,limit_0"),
    ("image/resize,w_100", "image/resize,w_100,m_fixed"),
    ("image/resize,m_pad,w_10,h_10", "image/resize,m_pad,w_10,h_10,color_000000"),
    ("image/rotate,90", "image/rotate,180"),
    ("image/resize,w_100/rotate,90", "image/rotate,90/resize,w_100"),
    ("image/resize,w_100", "image/resize,w_100/resize,w_100"),
    ("image/quality,q_80", "image/quality,Q_80"),
    ("image/crop,w_100,g_nw", "image/crop,w_100,g_se"),
    ("image/format,png", "image/format,webp"),
])
def test_different_meanings_have_different_canonical_strings(a, b):
    assert canon(a) != canon(b)


def test_canonical_string_parses_back_to_the_same_pipeline():
    for process in ("image/resize,m_pad,w_100,h_80,color_ff6a00/rotate,90/crop,x_10,g_center",
                    "image/quality,Q_70/format,webp/interlace,1/auto-orient,0"):
        once = canon(process)
        assert canon(once) == once
        assert parsed(once).steps == parsed(process).steps


# --- the length cap (EC 0017-00000288) ---------------------------------------------------------------

def test_length_cap_is_inclusive_and_counts_bytes():
    process = "image/resize,w_100"                       # 18 bytes
    assert parsed(process, Config(max_process_length=18)).names() == ["resize"]
    err = error_of(process, Config(max_process_length=17))
    assert (err.status, err.code, err.ec) == (400, "InvalidArgument", "0017-00000288")
    # Non-ASCII counts in UTF-8 bytes: 20 characters, 21 bytes.
    err = error_of("image/resize,w_100,é", Config(max_process_length=20))
    assert err.ec == "0017-00000288"


def test_default_length_cap_rejects_a_huge_string():
    err = error_of("image/" + "/".join(["rotate,90"] * 1000))
    assert err.ec == "0017-00000288"


def test_length_cap_through_the_middleware():
    client = make_client(max_process_length=10)
    fields = oss_error(get(client, "example.jpg", "image/resize,w_100"))
    assert fields["status"] == 400
    assert fields["EC"] == fields["header_ec"] == "0017-00000288"


# --- styles and sys/saveas ---------------------------------------------------------------------------

def test_missing_style_is_404_no_such_style(client):
    fields = oss_error(get(client, "example.jpg", "style/nosuch"))
    assert fields["status"] == 404
    assert fields["Code"] == "NoSuchStyle"


def test_missing_style_in_the_parser():
    err = error_of("style/small")
    assert (err.status, err.code) == (404, "NoSuchStyle")


def test_existing_style_runs_its_content():
    client = make_client(styles={"small": "image/resize,w_100/format,png"})
    response = get(client, "example.jpg", "style/small")
    assert response.status_code == 200
    assert size_of(response.data) == (100, 67)
    assert format_of(response.data) == "PNG"
    assert parse("style/small", Config(styles={"small": "image/resize,w_100"})).canonical() \
        == canon("image/resize,w_100")


@pytest.mark.parametrize("process", ["image/resize,w_100|sys/saveas,o_ZGVzdC5qcGc",
                                     "image/resize,w_100|sys/saveas,o_ZGVzdC5qcGc=,b_YnVja2V0",
                                     "style/small|sys/saveas,o_ZGVzdC5qcGc"])
def test_saveas_in_a_get_is_400(process):
    client = make_client(styles={"small": "image/resize,w_100"})
    fields = oss_error(get(client, "example.jpg", process))
    assert fields["status"] == 400
    assert fields["Code"] == "InvalidArgument"


# --- the request surface: which spelling triggers processing ---------------------------------------

def test_mis_cased_query_name_returns_the_original_object(client):
    response = closed(client.get("/example.jpg?X-Oss-Process=image/resize,w_100"))
    assert response.status_code == 200
    assert response.data == fixture_bytes("example.jpg")
    assert size_of(response.data) == (400, 267)


@pytest.mark.parametrize("name", ["X-OSS-PROCESS", "x-oss-Process", "x_oss_process", "x-oss-process "])
def test_other_spellings_of_the_query_name_are_plain_gets(client, name):
    response = closed(client.get(f"/example.jpg?{name}=image/rotate,400"))
    assert response.status_code == 200
    assert response.data == fixture_bytes("example.jpg")


def test_header_is_processed(client):
    response = closed(client.get("/example.jpg", headers={"x-oss-process": "image/resize,w_100"}))
    assert response.status_code == 200
    assert size_of(response.data) == (100, 67)


def test_header_errors_like_the_query(client):
    response = closed(client.get("/example.jpg", headers={"x-oss-process": "image/rotate,400"}))
    fields = oss_error(response)
    assert (fields["status"], fields["EC"]) == (400, "0040-00000217")


def test_query_wins_over_header(client):
    response = closed(client.get("/example.jpg?x-oss-process=image/resize,w_50",
                                 headers={"x-oss-process": "image/resize,w_100"}))
    assert response.status_code == 200
    assert size_of(response.data) == (50, 33)
    # ... even when the header alone would have failed.
    response = closed(client.get("/example.jpg?x-oss-process=image/resize,w_50",
                                 headers={"x-oss-process": "image/slim,1"}))
    assert response.status_code == 200
    assert size_of(response.data) == (50, 33)


def test_percent_encoded_query_as_sdks_send_it(client):
    response = closed(client.get("/example.jpg?x-oss-process=image%2Fresize%2Cw_100"))
    assert response.status_code == 200
    assert size_of(response.data) == (100, 67)


def test_percent_encoded_query_name_and_value(client):
    response = closed(client.get("/example.jpg?x%2Doss%2Dprocess=image%2Fresize%2Cm_fixed%2Cw_60%2Ch_40"))
    assert response.status_code == 200
    assert size_of(response.data) == (60, 40)


def test_other_query_parameters_do_not_disturb_processing(client):
    response = closed(client.get("/example.jpg?foo=bar&x-oss-process=image/resize,w_100&versionId=null"))
    assert response.status_code == 200
    assert size_of(response.data) == (100, 67)
