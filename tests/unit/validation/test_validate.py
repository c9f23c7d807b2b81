"""The entry point: ConfigErrors with file, line, object and field; the stage order; the
kinds it knows; and use as the store's validator."""

from __future__ import annotations

import textwrap

from pilotfish.core.objects import BUILTIN_KINDS, ConfigKey, ConfigObject
from pilotfish.core.store import ConfigError, ConfigStore, KindRegistry
from pilotfish.core.yamlload import load_text
from pilotfish.validation import schema_kinds, validate


def load(text: str, file: str = "mesh.yaml") -> ConfigObject:
    [obj], _ = load_text(textwrap.dedent(text), file)
    return obj


BAD_DR = """\
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata:
      name: reviews
      namespace: shop
    spec:
      host: reviews
      trafficPolicy:
        loadBalancer:
          warmup:
            duration: 60s
            minimumPercent: 120
    """


def test_errors_name_file_line_object_and_field():
    [problem] = validate(load(BAD_DR))
    assert problem == ConfigError(
        file="mesh.yaml", line=12,
        message="Invalid value: 120: spec.trafficPolicy.loadBalancer.warmup.minimumPercent in "
                "body should be less than or equal to 100",
        key=ConfigKey("DestinationRule", "shop", "reviews"),
        field="spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
    )
    assert str(problem).startswith("mesh.yaml:12: DestinationRule shop/reviews: spec.traffic")


def test_unknown_field_is_an_error_on_its_own_line_or_a_warning_when_asked():
    obj = load("""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolcy: {}
        """)
    [problem] = validate(obj)  # strict field validation, as kubectl's default
    assert (problem.severity, problem.line, problem.field) == ("error", 6, "spec.trafficPolcy")
    assert problem.message == 'unknown field "spec.trafficPolcy"'
    [problem] = validate(obj, unknown_fields="warning")  # fieldValidation: Warn
    assert problem.severity == "warning"
    assert problem.message == 'unknown field "spec.trafficPolcy" (ignored)'


def test_yaml_integer_keys_are_strings_as_kubectl_sends_them():
    obj = load("""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: web}
        spec:
          selector: {matchLabels: {app: web}}
          portLevelMtls:
            8080: {mode: DISABLE}
        """)
    assert validate(obj) == []


def test_rules_are_skipped_after_blocking_errors_and_semantics_after_any_error():
    obj = load("""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext}
        spec:
          hosts: ["*"]
          resolution: SOMETIMES
        """)
    problems = [(p.severity, p.field, p.message) for p in validate(obj)]
    assert problems == [
        ("error", "spec.resolution", 'Unsupported value: "SOMETIMES": supported values: '
         '"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"'),
        ("warning", "", "some validation rules were not checked because the object was "
         "invalid; correct the existing errors to complete validation"),
    ]


def test_unserved_version_is_an_error():
    obj = load("apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n"
               "spec: {}\n")
    [problem] = validate(obj)
    assert problem.field == "apiVersion"
    assert problem.message.startswith('Unsupported value: "networking.istio.io/v2"')


def test_kinds_pilotfish_does_not_apply_get_a_warning():
    obj = load("apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadGroup\n"
               "metadata: {name: g}\nspec: {template: {}}\n")
    [problem] = validate(obj)
    assert problem.severity == "warning"
    assert "accepted but not applied by pilotfish" in problem.message


def test_envoy_filter_is_applied_so_not_reported_as_not_applied():
    obj = load("apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n"
               "metadata: {name: f}\nspec: {}\n")
    assert validate(obj) == []


def test_plugin_checks_run_only_after_the_schema_passed():
    calls: list[str] = []

    def plugin(obj: ConfigObject) -> list[ConfigError]:
        calls.append(obj.name)
        return [ConfigError(obj.source.file, 1, "plugin says no", obj.key)]

    good = load("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
                "spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, "
                "hosts: ['*']}]}\n")
    assert [p.message for p in validate(good, plugin_checks=plugin)] == ["plugin says no"]
    validate(load(BAD_DR), plugin_checks=plugin)
    assert calls == ["g"]


def test_schema_kinds_cover_istio_kinds_beyond_the_builtin_ones():
    kinds = {info.kind: info for info in schema_kinds()}
    for kind in ("Telemetry", "WasmPlugin", "EnvoyFilter", "ProxyConfig", "WorkloadGroup",
                 "VirtualService", "AuthorizationPolicy"):
        assert kind in kinds
    assert kinds["Telemetry"].api_versions() == ("telemetry.istio.io/v1",
                                                 "telemetry.istio.io/v1alpha1")


def test_store_rejects_invalid_objects_and_keeps_the_last_good_version():
    store = ConfigStore(validator=validate, kinds=KindRegistry([*BUILTIN_KINDS,
                                                                 *schema_kinds()]))
    good = load(BAD_DR.replace("120", "50"))
    assert store.replace("mesh.yaml", [good]).errors == ()
    update = store.replace("mesh.yaml", [load(BAD_DR)])
    assert [e.field for e in update.errors] == [
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent"]
    kept = store.get(ConfigKey("DestinationRule", "shop", "reviews"))
    assert kept is not None and kept.same_content(good)
