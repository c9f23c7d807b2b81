"""Envoy's access-log formats rendered by the native proxy."""

from __future__ import annotations

from pilotfish.core.native import access_log


def test_istios_format_renders_with_missing_values_as_dashes():
    line = access_log.compile_format(
        '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
        '%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER_RAW% "%REQ(USER-AGENT)%" '
        '%UNKNOWN_OPERATOR% %DURATION%ms\n').render(access_log.Entry(
            0.5, "GET", "/p", "HTTP/1.1", 200, cluster="outbound|80||web",
            duration_ms=3, headers=[]))
    assert line == ('[1970-01-01T00:00:00.500Z] "GET /p HTTP/1.1" 200 - outbound|80||web '
                    '"-" - 3ms\n')


def test_literal_text_of_any_kind_is_kept_as_written():
    # The format is compiled into a function: quotes, backslashes and braces in its text
    # stay text, an empty format renders nothing.
    entry = access_log.Entry(0.0, headers=[("x-b", "v")], sent=12)
    line = access_log.compile_format(
        "%BYTES_SENT% \"q'\\{x}%% %REQ(X-A?X-B)% %PROTOCOL%\n").render(entry)
    assert line == "12 \"q'\\{x}%% v -\n"
    assert access_log.compile_format("").render(entry) == ""


def test_a_format_dictionary_renders_one_typed_json_object_a_line():
    import json

    line = access_log.compile_json({
        "code": "%RESPONSE_CODE%", "sent": "%BYTES_SENT%", "flags": "%RESPONSE_FLAGS%",
        "agent": "%REQ(USER-AGENT)%", "missing": "%REQ(X-NONE)%", "route": "%ROUTE_NAME%",
        "said": "code=%RESPONSE_CODE% agent=%REQ(X-NONE)%", "unknown": "%NOT_AN_OPERATOR%",
        "literal": 3, "on": True, "nested": {"cluster": "%UPSTREAM_CLUSTER_RAW%"},
    }).render(access_log.Entry(0.0, "GET", "/p", "HTTP/1.1", 200, sent=12,
                               cluster="outbound|80||web", headers=[("user-agent", "t/1")]))
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "code": 200, "sent": 12, "flags": "-", "agent": "t/1", "missing": None, "route": None,
        "said": "code=200 agent=-", "unknown": None, "literal": 3, "on": True,
        "nested": {"cluster": "outbound|80||web"}}
