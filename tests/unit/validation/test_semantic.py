"""Istio's webhook checks and the core-kind checks, through `validate` on small objects."""

from __future__ import annotations

import textwrap

import pytest

from pilotfish.core.store import ConfigError
from pilotfish.core.yamlload import load_text
from pilotfish.validation import validate

NET = "apiVersion: networking.istio.io/v1\n"
SEC = "apiVersion: security.istio.io/v1\n"


def errors(text: str) -> list[str]:
    return [f"{e.field}: {e.message}" for e in _validate(text) if e.severity == "error"]


def warnings(text: str) -> list[str]:
    return [f"{e.field}: {e.message}" for e in _validate(text) if e.severity == "warning"]


def _validate(text: str) -> list[ConfigError]:
    objects, load_errors = load_text(textwrap.dedent(text), "t.yaml")
    assert not load_errors
    [obj] = objects
    return validate(obj)


def vs(spec: str) -> str:
    return NET + "kind: VirtualService\nmetadata: {name: shop}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec), "  ")


GOOD_VS = vs("""\
    hosts: [shop.example.com]
    http:
    - match: [{uri: {prefix: /api}}]
      route:
      - destination: {host: api, subset: v1}
        weight: 90
      - destination: {host: api, subset: v2}
        weight: 10
    - route: [{destination: {host: web}}]
    """)


def test_good_virtual_service_passes():
    assert errors(GOOD_VS) == []
    assert warnings(GOOD_VS) == []


@pytest.mark.parametrize(("spec", "expected"), [
    ("hosts: [a]\n", "spec: http, tcp or tls must be provided in a VirtualService"),
    ("hosts: [a]\nhttp: [{match: [{uri: {exact: /}}]}]\n",
     "spec.http[0]: an http route needs one of route, redirect, directResponse or delegate"),
    ("hosts: [a]\nhttp: [{redirect: {uri: /x}, route: [{destination: {host: b}}]}]\n",
     "spec.http[0]: an http route cannot contain both route and redirect"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: b}, weight: -1}]}]\n",
     'spec.http[0].route[0].weight: Invalid value: -1: weight must not be negative'),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: b}, weight: 0}, "
     "{destination: {host: c}, weight: 0}]}]\n",
     "spec.http[0].route: Invalid value: 0: total destination weight is 0"),
    ("hosts: [a]\nhttp: [{match: [{uri: {regex: '(unclosed'}}], "
     "route: [{destination: {host: b}}]}]\n",
     "spec.http[0].match[0].uri.regex: Invalid value: \"(unclosed\": missing ): (unclosed; "
     "Istio uses RE2 regex syntax"),
    ("hosts: ['*']\nhttp: [{route: [{destination: {host: b}}]}]\n",
     'spec.hosts[0]: Invalid value: "*": wildcard host * is not allowed for VirtualServices '
     "bound to the mesh"),
    ("hosts: [a, a]\nhttp: [{route: [{destination: {host: b}}]}]\n",
     "spec.hosts[1]: Invalid value: \"a\": duplicate of host 'a'"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: b}}], "
     "redirect: {uri: /x}, directResponse: {status: 200}}]\n",
     "spec.http[0]: an http route cannot contain both route and redirect"),
    ("hosts: [a]\nhttp: [{directResponse: {status: 700}}]\n",
     "spec.http[0].directResponse.status: Invalid value: 700: must be in range 200-599"),
    ("hosts: [a]\nhttp: [{redirect: {uri: /x, redirectCode: 200}}]\n",
     "spec.http[0].redirect.redirectCode: Invalid value: 200: must be a 3xx code"),
    ("hosts: [a]\nhttp: [{route: [{destination: {host: b}}], "
     "corsPolicy: {allowMethods: [FETCH]}}]\n",
     'spec.http[0].corsPolicy.allowMethods[0]: Invalid value: "FETCH": not a supported HTTP '
     "method"),
    ("hosts: [a]\ngateways: [foo/bar]\ntcp: [{}]\n",
     "spec.tcp[0].route: a TCP route needs at least one destination"),
])
def test_virtual_service_errors(spec: str, expected: str):
    assert expected in errors(vs(spec))


def test_rule_after_a_catch_all_is_unreachable():
    text = vs("hosts: [a]\nhttp:\n- route: [{destination: {host: b}}]\n"
              "- match: [{uri: {prefix: /x}}]\n  route: [{destination: {host: c}}]\n")
    assert warnings(text) == [
        "spec.http[1]: rule not used: rule 0 before it already matches every request"]


def test_delegate_virtual_service_has_no_hosts_and_no_tcp():
    text = vs("http: [{route: [{destination: {host: b}}]}]\ntcp: [{route: "
              "[{destination: {host: b}}]}]\n")
    assert "spec.tcp: a delegate VirtualService (no hosts) cannot set tcp" in errors(text)


def dr(spec: str) -> str:
    return NET + "kind: DestinationRule\nmetadata: {name: web}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec), "  ")


def test_destination_rule_subsets():
    text = dr("host: web\nsubsets:\n- {name: v1, labels: {version: v1}}\n"
              "- {name: v1, labels: {version: v2}}\n- {name: all}\n")
    assert errors(text) == [
        'spec.subsets[1].name: Invalid value: "v1": duplicate subset name (also subset 0)']
    assert warnings(text) == [
        "spec.subsets[2].labels: subset has no labels: it selects every endpoint of the host"]


def test_destination_rule_policies():
    text = dr("host: web\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL, credentialName: x}\n"
              "  loadBalancer: {consistentHash: {maglev: {tableSize: 1000}}}\n")
    assert errors(text) == [
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: Invalid value: 1000: "
        "must be a prime number below 5000011",
        "spec.trafficPolicy.tls.credentialName: ISTIO_MUTUAL uses Istio's own certificates; "
        "credentialName cannot be set",
    ]


def gateway(servers: str, name: str = "ingress") -> str:
    return (NET + f"kind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  selector: "
            "{istio: ingressgateway}\n  servers:\n" + textwrap.indent(textwrap.dedent(servers),
                                                                       "  "))


def test_gateway_servers():
    text = gateway("""\
        - port: {number: 0, name: http, protocol: HTTP}
          hosts: ["shop/*.example.com"]
        - port: {number: 443, name: http, protocol: HTTPS}
          hosts: ["bad_host!"]
        """)
    assert errors(text) == [
        'spec.servers[0].port.number: Invalid value: 0: port number 0 must be in the range '
        "1..65535",
        "spec.servers[1].hosts[0]: Invalid value: \"bad_host!\": domain name 'bad_host!' has "
        "an invalid label 'bad_host!'",
        "spec.servers[1].tls: Required value: HTTPS servers need TLS settings",
        'spec.servers[1].port.name: Invalid value: "http": port names must be unique across '
        "servers (also server 0)",
    ]


def test_gateway_name_must_be_a_label():
    text = gateway("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n",
                   name="in.gress")
    assert errors(text) == ['metadata.name: Invalid value: "in.gress": a Gateway name must be '
                            "a DNS-1123 label (no dots)"]


def test_service_entry_resolution_rules():
    text = NET + textwrap.dedent("""\
        kind: ServiceEntry
        metadata: {name: ext}
        spec:
          hosts: ["*.example.com", api.example.com]
          resolution: DNS
          ports: [{number: 5432, name: db, protocol: TCP}]
        """)
    assert errors(text) == [
        'spec.hosts[0]: Invalid value: "*.example.com": resolution DNS without endpoints needs '
        "fully qualified hosts (no wildcards)",
        "spec.hosts: several hosts cannot share non-HTTP, non-TLS ports unless resolution is "
        "NONE (nothing tells the hosts apart)",
    ]


def test_sidecar_egress_hosts_need_a_namespace():
    text = NET + "kind: Sidecar\nmetadata: {name: default}\nspec:\n  egress: [{hosts: [web]}]\n"
    assert errors(text) == [
        "spec.egress[0].hosts[0]: Invalid value: \"web\": host 'web' must be of the form "
        "namespace/dnsName"]


def authz(spec: str) -> str:
    return SEC + "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec), "  ")


def test_custom_action_names_its_provider():
    assert errors(authz("action: CUSTOM\nprovider: {name: opa}\nrules: [{}]\n")) == []
    [problem] = errors(authz("action: CUSTOM\nrules: [{}]\n"))
    assert problem.startswith("spec.provider.name: action CUSTOM needs the name of an "
                              "ext_authz provider")


def test_deny_without_rules_and_empty_sources():
    assert errors(authz("action: DENY\n")) == [
        "spec.rules: a DENY policy without rules never matches; add an empty rule {} to deny "
        "every request"]
    assert errors(authz("rules: [{from: [{source: {}}]}]\n")) == [
        "spec.rules[0].from[0].source: source must not be empty"]


def test_conditions_keys_and_values():
    text = authz("rules:\n- when:\n  - {key: source.ip, values: [10.0.0.0/8, nope]}\n"
                 "  - {key: request.colour, values: [red]}\n")
    assert errors(text) == [
        "spec.rules[0].when[0].values[1]: Invalid value: \"nope\": 'nope' is not a valid IP "
        "address or CIDR block",
        'spec.rules[0].when[1].key: Invalid value: "request.colour": unknown attribute',
    ]


def test_deny_on_http_attributes_only_warns_about_tcp():
    text = authz("action: DENY\nrules: [{to: [{operation: {methods: [POST]}}]}]\n")
    assert errors(text) == []
    assert warnings(text) == ["spec.rules[0]: this DENY rule uses only HTTP attributes, so it "
                              "denies all TCP traffic in its scope; name the ports to limit it"]


def test_request_authentication_jwks_must_parse():
    text = SEC + textwrap.dedent("""\
        kind: RequestAuthentication
        metadata: {name: jwt}
        spec:
          jwtRules: [{issuer: me, jwks: "not json"}]
        """)
    assert errors(text)[0].startswith(
        'spec.jwtRules[0].jwks: Invalid value: "<jwks>": not a JSON Web Key Set')


def test_jwks_uri_takes_files_as_pilotfish_extension():
    def rule(uri: str) -> str:
        return SEC + textwrap.dedent(f"""\
            kind: RequestAuthentication
            metadata: {{name: jwt}}
            spec:
              jwtRules: [{{issuer: me, jwksUri: "{uri}"}}]
            """)
    assert errors(rule("file:///etc/jwks.json")) == []
    assert errors(rule("https://example.com/jwks")) == []
    assert errors(rule("ftp://example.com/jwks"))[0].startswith(
        "spec.jwtRules[0].jwksUri: Invalid value: \"string\": url must have scheme http://, "
        "https:// or file://")


def test_service_ports():
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          ports:
          - {name: http, port: 80, targetPort: http-web}
          - {name: http, port: 80, targetPort: 70000}
          - {name: grpc, port: 0, protocol: HTTP}
        """)
    assert errors(text) == [
        'spec.ports[1].name: Duplicate value: "http"',
        'spec.ports[1]: Duplicate value: {"port": 80, "protocol": "TCP"}',
        "spec.ports[1].targetPort: Invalid value: 70000: port number 70000 must be in the range "
        "1..65535",
        'spec.ports[2].protocol: Unsupported value: "HTTP": supported values: "TCP", "UDP", '
        '"SCTP"',
        "spec.ports[2].port: Invalid value: 0: port number 0 must be in the range 1..65535",
    ]


def test_pod_ip_endpoints_and_slices():
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.x}\n"
    assert errors(pod) == ['status.podIP: Invalid value: "10.0.0.x": must be an IP address']
    # As the API server: a Pod with a spec must say what it runs.
    assert errors(pod.replace("status:", "spec: {}\nstatus:")) == [
        "spec.containers: Required value"]
    endpoints = ("apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets:\n"
                 "- addresses: [{ip: 10.0.0.1}, {ip: host}]\n  ports: [{port: 8080}]\n")
    assert errors(endpoints) == [
        'subsets[0].addresses[1].ip: Invalid value: "host": must be an IP address']
    slice_ = ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\n"
              "addressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]\n")
    assert errors(slice_) == [
        'endpoints[0].addresses[0]: Invalid value: "fd00::1": must be an IPv4 address']


def test_namespace_and_object_names():
    assert errors("apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n")[0].startswith(
        'metadata.name: Invalid value: "Shop": must be a lowercase RFC 1123 label')
    assert errors(dr("host: web\n").replace("name: web", "name: Web_1")) != []


@pytest.mark.parametrize(("spec", "expected"), [
    ('hosts: ["api*"]\n', "spec.hosts[0]: Invalid value: \"api*\": domain name 'api*' has an "
     "invalid label 'api*'"),
    ("hosts: [db.example.com]\naddresses: [10.0.0.0/40]\n",
     "spec.addresses[0]: Invalid value: \"10.0.0.0/40\": '10.0.0.0/40' is not a valid IP "
     "address or CIDR block"),
    ('hosts: [db.example.com]\nresolution: STATIC\nworkloadSelector: {labels: {"*": db}}\n',
     'spec.workloadSelector.labels.*: Invalid value: "*=db": wildcard is not supported in '
     "selector"),
])
def test_service_entry_cases_the_crd_rules_leave_to_the_webhook(spec: str, expected: str):
    text = NET + "kind: ServiceEntry\nmetadata: {name: db}\nspec:\n" + textwrap.indent(spec, "  ")
    assert expected in errors(text)


def test_sidecar_egress_hosts_may_exclude_with_a_tilde():
    text = NET + ("kind: Sidecar\nmetadata: {name: default}\nspec:\n  egress: [{hosts: "
                  "['*/*', '~prod-us2/*', '~/a.example.com', '~./b', '~/*']}]\n")
    assert errors(text) == []
    bad = NET + ("kind: Sidecar\nmetadata: {name: default}\nspec:\n  egress: "
                 "[{hosts: ['~Bad_/*']}]\n")
    assert errors(bad) == ["spec.egress[0].hosts[0]: Invalid value: \"~Bad_/*\": host "
                           "'~Bad_/*': invalid namespace 'Bad_'"]
