"""The Prometheus text format, read and written without sockets."""

from __future__ import annotations

import pytest

from pilotfish.core import prometheus
from pilotfish.core.prometheus import Family, PrometheusFormatError, Sample


def test_types_help_and_suffixed_series_gather_into_families() -> None:
    families = prometheus.parse("""\
# HELP rq_time Request time.
# TYPE rq_time histogram
rq_time_bucket{cluster="a",le="0.5"} 1
rq_time_bucket{cluster="a",le="+Inf"} 3
rq_time_sum{cluster="a"} 12.5
rq_time_count{cluster="a"} 3
# TYPE up gauge
up 1
stray_total 4 1700000000000
""")
    assert [(f.name, f.type) for f in families] == [
        ("rq_time", "histogram"), ("up", "gauge"), ("stray_total", "untyped")]
    histogram = families[0]
    assert histogram.help == "Request time."
    assert [s.name for s in histogram.samples] == [
        "rq_time_bucket", "rq_time_bucket", "rq_time_sum", "rq_time_count"]
    assert histogram.samples[1].labels == (("cluster", "a"), ("le", "+Inf"))
    assert families[2].samples[0].timestamp == "1700000000000"


def test_label_values_keep_escapes_commas_and_braces() -> None:
    [family] = prometheus.parse(
        'm{path="/a,b}",quote="say \\"hi\\"",nl="x\\ny",back="c:\\\\",} 2\n')
    sample = family.samples[0]
    assert sample.label("path") == "/a,b}"
    assert sample.label("quote") == 'say "hi"'
    assert sample.label("nl") == "x\ny"
    assert sample.label("back") == "c:\\"
    # Writing it back escapes the same way, so the text round-trips.
    assert prometheus.parse(prometheus.render([family])) == [family.__class__(
        "m", "untyped", "", (sample,))]


def test_series_of_one_family_that_arrive_apart_are_gathered() -> None:
    families = prometheus.parse("# TYPE a counter\na 1\n# TYPE b gauge\nb 2\na{x=\"1\"} 3\n")
    assert [len(f.samples) for f in families] == [2, 1]


def test_openmetrics_from_apps_is_written_as_classic_text() -> None:
    families = prometheus.parse("""\
# TYPE jobs counter
# UNIT jobs seconds
jobs_total 5
jobs_created 1.7e9
# TYPE build info
build_info{version="1"} 1
# EOF
ignored 1
""")
    assert [f.name for f in families] == ["jobs", "build"]
    text = prometheus.render(families)
    assert text == ("# TYPE jobs_total counter\njobs_total 5\n"
                    "# TYPE build untyped\nbuild_info{version=\"1\"} 1\n")


@pytest.mark.parametrize(("line", "message"), [
    ("3metric 1", "expected a metric name"),
    ('m{a="1" b="2"} 1', "expected ',' or '}'"),
    ("m{a=1} 1", "bad label set"),
    ("m one", "'one' is not a number"),
    ("m 1 2 3", "expected VALUE [TIMESTAMP]"),
])
def test_errors_name_the_source_and_line(line: str, message: str) -> None:
    with pytest.raises(PrometheusFormatError, match=f"app:2: {message.replace('[', '.')}"):
        prometheus.parse(f"ok 1\n{line}\n", "app")


def test_special_values_pass_through_as_written() -> None:
    [family] = prometheus.parse("m{a=\"1\"} +Inf\n")
    assert family.samples[0].value == "+Inf"
    assert prometheus.format_sample(Sample("m", (), "NaN")) == "m NaN"


def test_render_of_nothing_is_empty() -> None:
    assert prometheus.render([]) == ""
    assert prometheus.render([Family("g", "gauge")]) == "# TYPE g gauge\n"
