"""YAML with line numbers, and the store's last-good-version rules."""

from __future__ import annotations

import pytest

from pilotfish.core.objects import ConfigKey
from pilotfish.core.store import ConfigError, ConfigStore
from pilotfish.core.yamlload import LoadLimits, YAMLFileError, load_text

TWO_DOCS = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: shop
spec:
  hosts: [web]
"""


def test_documents_keep_lines_and_default_namespace():
    objects, errors = load_text(TWO_DOCS, "mesh.yaml")
    assert errors == []
    service, vs = objects
    assert service.key == ConfigKey("Service", "default", "web")
    assert service.source.line == 1
    assert service.line_of(("spec", "ports", 0, "port")) == 7
    assert vs.namespace == "shop" and vs.source.line == 9
    assert vs.line_of(("spec", "hosts")) == 15
    # A field that does not exist maps to its nearest parent.
    assert vs.line_of(("spec", "http", 0)) == 14


def test_bad_syntax_names_file_and_line():
    with pytest.raises(YAMLFileError) as info:
        load_text("kind: Service\nmetadata: [\n", "broken.yaml")
    assert info.value.error.file == "broken.yaml"
    assert info.value.error.line >= 2


def test_document_without_name_is_reported():
    objects, errors = load_text("apiVersion: v1\nkind: Service\nmetadata: {}\n", "x.yaml")
    assert objects == []
    assert "metadata.name: Required value" in errors[0].message


def test_list_kind_is_expanded():
    text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n" \
           "  metadata: {name: shop}\n"
    objects, _ = load_text(text, "list.yaml")
    assert [o.kind for o in objects] == ["Namespace"]


def svc(name: str, port: int = 80, file: str = "f.yaml"):
    text = f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n" \
           f"spec: {{ports: [{{port: {port}}}]}}\n"
    return load_text(text, file)[0][0]


def test_valid_edit_replaces_object():
    store = ConfigStore()
    store.replace("f.yaml", [svc("web", 80)])
    update = store.replace("f.yaml", [svc("web", 81)])
    assert update.changed == {ConfigKey("Service", "default", "web")}
    assert store.get(ConfigKey("Service", "default", "web")).spec["ports"][0]["port"] == 81


def test_broken_edit_of_one_object_does_not_remove_it():
    store = ConfigStore(lambda o: [] if o.spec["ports"][0]["port"] == 80 else [
        ConfigError("f.yaml", 1, "port must be 80", o.key)
    ])
    store.replace("f.yaml", [svc("web", 80)])
    update = store.replace("f.yaml", [svc("web", 99)])
    assert update.changed == frozenset()
    assert update.errors[0].message == "port must be 80"
    assert store.get(ConfigKey("Service", "default", "web")).spec["ports"][0]["port"] == 80
    assert [e.message for e in store.errors()] == ["port must be 80"]
    # An object never accepted is simply absent.
    store.replace("g.yaml", [svc("other", 1)])
    assert store.get(ConfigKey("Service", "default", "other")) is None


def test_unparseable_file_keeps_everything_it_held():
    store = ConfigStore()
    store.replace("f.yaml", [svc("web")])
    update = store.failed("f.yaml", ConfigError("f.yaml", 3, "invalid YAML"))
    assert update.changed == frozenset()
    assert store.get(ConfigKey("Service", "default", "web")) is not None
    assert str(store.errors()[0]) == "f.yaml:3: invalid YAML"


def test_removing_file_deletes_its_objects_and_notifies():
    store = ConfigStore()
    seen = []
    store.subscribe(seen.append)
    store.replace("f.yaml", [svc("web")])
    store.remove("f.yaml")
    assert store.get(ConfigKey("Service", "default", "web")) is None
    assert [u.changed for u in seen] == [{ConfigKey("Service", "default", "web")}] * 2


def test_unknown_kind_is_reported_and_ignored():
    store = ConfigStore()
    objects, _ = load_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "d.yaml")
    update = store.replace("d.yaml", objects)
    assert len(store) == 0
    assert "unknown kind Deployment" in update.errors[0].message
    assert update.errors[0].severity == "warning"


def test_unserved_api_version_is_rejected():
    store = ConfigStore()
    objects, _ = load_text(
        "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n", "g.yaml"
    )
    update = store.replace("g.yaml", objects)
    assert len(store) == 0
    assert "networking.istio.io/v1" in update.errors[0].message


def test_same_content_reloaded_is_not_a_change():
    store = ConfigStore()
    store.replace("f.yaml", [svc("web")])
    assert store.replace("f.yaml", [svc("web")]).changed == frozenset()


def test_conflicting_origins_first_in_order_wins():
    store = ConfigStore()
    store.replace("b.yaml", [svc("web", 2)])
    store.replace("a.yaml", [svc("web", 1)])
    assert store.get(ConfigKey("Service", "default", "web")).spec["ports"][0]["port"] == 1
    store.remove("a.yaml")
    assert store.get(ConfigKey("Service", "default", "web")).spec["ports"][0]["port"] == 2


def test_unquoted_yaml_boolean_namespace_is_an_error_not_default():
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: off}\n"
    objects, errors = load_text(text, "x.yaml")
    assert objects == []
    assert "metadata.namespace: must be a string, got False" in errors[0].message
    assert "quote it" in errors[0].message


def test_conflicting_origins_are_reported_naming_both_files():
    store = ConfigStore()
    store.replace("b.yaml", [svc("web", 2, "b.yaml")])
    update = store.replace("a.yaml", [svc("web", 1, "a.yaml")])
    (conflict,) = [e for e in store.errors() if "also defined" in e.message]
    assert conflict in update.errors
    assert (conflict.file, conflict.severity, conflict.key) == (
        "b.yaml", "warning", ConfigKey("Service", "default", "web"))
    assert "also defined in a.yaml:1; that one is used" in conflict.message
    store.remove("a.yaml")
    assert not any("also defined" in e.message for e in store.errors())


def test_check_validates_without_changing_the_store():
    store = ConfigStore(lambda obj: [ConfigError("x", 1, "bad", obj.key)]
                        if obj.name == "bad" else [])
    checked = store.check([svc("good"), svc("bad")])
    assert [c.ok for c in checked] == [True, False] and len(store) == 0
    store.replace_checked("f.yaml", checked)
    assert [o.name for o in store.objects()] == ["good"]
    assert [e.message for e in store.errors()] == ["bad"]


def test_a_watch_batch_applies_in_order_with_one_notification_and_keeps_the_last_good():
    store = ConfigStore(lambda obj: [ConfigError("k8s", 0, "port must be 80", obj.key)]
                        if obj.spec["ports"][0]["port"] != 80 else [])
    seen = []
    store.subscribe(seen.append)
    web, db = ConfigKey("Service", "default", "web"), ConfigKey("Service", "default", "db")
    store.apply_checked("k8s", [(o.key, c) for o in (svc("web"), svc("db"))
                                for c in store.check([o])])
    bad = store.check([svc("web", 99)])[0]
    update = store.apply_checked("k8s", [(web, bad), (db, None), (db, None)])
    assert update.changed == {db} and len(seen) == 2
    assert store.get(web).spec["ports"][0]["port"] == 80  # the last good one
    assert [str(e) for e in store.errors()] == ["k8s: Service default/web: port must be 80"]
    # The problem stands until the object changes again; a new good version clears it.
    store.apply_checked("k8s", [(web, store.check([svc("web", 80)])[0])])
    assert store.errors() == [] and store.get(web) is not None
    assert store.apply_checked("k8s", [(web, None)]).changed == {web}
    assert len(store) == 0 and store.origins() == []


# -- limits: what one file may hold ------------------------------------------------------

LIMITED = LoadLimits(max_file_bytes=400, max_objects=2, max_depth=5, max_nodes=50,
                     max_scalar_bytes=10)
NS = "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n"


@pytest.mark.parametrize(("text", "line", "message"), [
    ("x: " + "y" * 20 + "\n", 1, "a value of 20 characters is over the limit of 10 "
     "(raise it with discovery.configLimits.maxScalarSize in the mesh config)"),
    ("a: {b: {c: {d: {e: {f: 1}}}}}\n", 1, "nesting depth is over the limit of 5"),
    ("a: [[[[[[1]]]]]]\n", 0, "nesting depth is over the limit of 5"),
    ("a: &x [1, 2, 3, 4, 5, 6, 7, 8]\nb: [*x, *x, *x, *x, *x, *x]\n", 2,
     "a document of 55 nodes (aliases expanded) is over the limit of 50"),
    ("---\n".join([NS.format("a"), NS.format("b"), NS.format("c")]), 9,
     "the number of objects is over the limit of 2"),
    ("x: y\n" * 90, 0, "a file of 450 characters is over the limit of 400"),
    ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first at line 1)"),
])
def test_limits_refuse_a_file_naming_line_and_mesh_config_field(text: str, line: int,
                                                                  message: str):
    with pytest.raises(YAMLFileError) as info:
        load_text(text, "f.yaml", limits=LIMITED)
    assert (info.value.error.file, info.value.error.line) == ("f.yaml", line)
    assert message in info.value.error.message


def test_a_bracket_bomb_is_refused_before_it_is_composed():
    text = "[" * 100_000 + "]" * 100_000  # libyaml's composer would recurse in C
    with pytest.raises(YAMLFileError, match="nesting depth is over the limit of 100"):
        load_text(text, "f.json")
    # Brackets in quoted strings and comments are not nesting.
    ok = 'a: "' + "[" * 200 + '"\nb: 1  # ' + "{" * 200 + "\n"
    assert load_text(ok.replace("a:", "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}"
                                "\nx:"), "f.yaml")[0]


def test_an_unquoted_integer_too_long_to_convert_names_its_line():
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nspec: {n: " + "7" * 5000 + "}\n"
    with pytest.raises(YAMLFileError) as info:
        load_text(text, "f.yaml")
    assert info.value.error.line == 4
    assert "an unquoted number of 5,000 digits" in info.value.error.message
    quoted = text.replace("7" * 5000, '"' + "7" * 5000 + '"')
    assert load_text(quoted, "f.yaml")[0][0].body["spec"]["n"] == "7" * 5000


def test_a_label_with_an_integer_key_is_validated_not_a_crash():
    """Found by the fuzz suite (tests/fuzz): YAML reads ``0:`` as an int, and validation
    raised AttributeError on it. Objects are read as kubectl sends them: string keys."""
    from pilotfish.validation import validate

    text = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: web\n"
            "  labels:\n    0: null\nspec: {}\n")
    (obj,), errors = load_text(text, "z-fuzz.yaml")
    assert errors == [] and obj.labels == {"0": None}
    assert [e.message for e in validate(obj)] == ["a Gateway needs at least one server"]
    yaml_keys = load_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {true: 1, "
                          "8080: x, 2001-01-01: y}}\n", "f.yaml")[0][0]
    assert yaml_keys.labels == {"true": 1, "8080": "x", "2001-01-01": "y"}
