"""AuthorizationPolicy checks that protect the RBAC translation: path templates, sources."""

from __future__ import annotations

import textwrap

from pilotfish.core.yamlload import load_text
from pilotfish.validation import validate


def errors(spec: str) -> list[str]:
    text = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            "metadata: {name: p}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  "))
    objects, load_errors = load_text(text, "t.yaml")
    assert not load_errors
    [obj] = objects
    return [f"{e.field}: {e.message}" for e in validate(obj) if e.severity == "error"]


def test_path_templates_take_whole_segments_and_nothing_templated_after_double_star() -> None:
    good = 'rules: [{to: [{operation: {paths: ["/a/{*}/b/{**}", "/{**}/b", "/x/*"]}}]}]\n'
    assert errors(good) == []
    bad = 'rules: [{to: [{operation: {notPaths: ["/a/{**}/b/{*}", "/a/x{*}"]}}]}]\n'
    assert errors(bad) == [
        'spec.rules[0].to[0].operation.notPaths[0]: Invalid value: "/a/{**}/b/{*}": no {*} or '
        "{**} may follow {**}",
        'spec.rules[0].to[0].operation.notPaths[1]: Invalid value: "/a/x{*}": {*} and {**} '
        "must each be a whole path segment",
    ]


def test_a_source_with_trust_domains_only_is_not_empty() -> None:
    assert errors("rules: [{from: [{source: {trustDomains: [example.org]}}]}]\n") == []
