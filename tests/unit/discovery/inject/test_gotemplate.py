"""The Go template subset custom injection templates are written in."""

from __future__ import annotations

import pytest

from pilotfish.discovery.inject.gotemplate import TemplateError, render

POD = {"ObjectMeta": {"name": "web", "annotations": {"team": "blue"}},
       "Spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "side"}]},
       "Values": {"global": {"hub": "docker.io/istio", "proxy": {"privileged": False}}},
       "Revision": ""}


def test_fields_ranges_and_trim_markers_as_go_renders_them():
    text = """\
containers:
{{- range $index, $container := .Spec.Containers }}
- name: {{ $container.Name }}-{{ $index }}
{{- end }}
hub: {{ .Values.global.hub }}
privileged: {{ .Values.global.proxy.privileged }}
missing: {{ .ObjectMeta.Labels }}
team: {{ index .ObjectMeta.Annotations "team" | quote }}
"""
    assert render(text, POD) == """\
containers:
- name: app-0
- name: side-1
hub: docker.io/istio
privileged: false
missing: <no value>
team: "blue"
"""


def test_conditions_with_and_functions():
    text = ("{{ if eq .ObjectMeta.Name \"web\" }}web{{ else }}other{{ end }} "
            "{{ with .Spec.Containers }}{{ len . }}{{ end }} "
            "{{ default \"none\" .Revision }} {{ not .Values.global.proxy.privileged }} "
            "{{/* a comment */}}{{ range .Spec.Containers }}[{{ .Name }}]{{ end }} "
            "{{ toJson .ObjectMeta.Annotations }}")
    assert render(text, POD) == 'web 2 none true [app][side] {"team":"blue"}'


@pytest.mark.parametrize(("text", "message"), [
    ('{{ template "x" . }}', "'template' is not supported"),
    ("{{ range .Spec.Containers }}open", r"missing \{\{ end \}\}"),
    ("{{ upper .ObjectMeta.Name }}", "'upper' is not a function"),
    ("{{ $nope.Name }}", r"undefined variable \$nope"),
])
def test_what_is_outside_the_subset_is_refused_naming_it(text: str, message: str):
    with pytest.raises(TemplateError, match=message):
        render(text, POD)
