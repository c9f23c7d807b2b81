"""Fuzz: no config file can crash, hang or corrupt discovery's load path.

Each example is one file, put through what discovery does with a file, in process: read,
parse and validate it within the limits (``prepare_file``), apply it to a store that holds
a good file beside it, build a push context, run the analyzers, and generate every xDS
type for the proxies it could concern (a sidecar in the good file's namespace, one per Pod
it defines, a router per Gateway, a proxyless gRPC client) through the generation cache
discovery uses. The file is one of:

* a real document (the bundled demo mesh, or Istio's corpus), mutated: keys dropped,
  replaced or inserted (names taken from real documents, and non-string keys), scalars
  turned into another type, deep nesting, huge or odd strings, subtrees shared (YAML
  anchors and aliases) or fanned out, then edits to the text itself (tags, merge keys,
  undefined aliases, truncation, stray punctuation);
* generated: arbitrary text, arbitrary bytes, and random trees with a real kind's
  apiVersion and kind, written as YAML or JSON.

Properties: the file is accepted, or refused with errors that name it; nothing raises,
and the safety nets behind the load path (the files source's "unexpected error", the
analyzers' and the generation cache's fallbacks) catch nothing; objects the push
context's guard leaves out are named; each example ends within its deadline (a CPU-time
alarm turns a hang into a failing example); the good file's objects are untouched, and a
file that no longer parses keeps what it held.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import reprlib
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

from pilotfish import analysis
from pilotfish.core import push_context
from pilotfish.core.meshconfig import MeshSettings
from pilotfish.core.objects import ConfigKey, ConfigObject, as_json, split_api_version
from pilotfish.core.proxy import NodeIdError, Proxy, parse_node
from pilotfish.core.store import ConfigStore
from pilotfish.core.xds.generator import GenerationCache, GenerationError, PushState
from pilotfish.plugins.files_source import Prepared, prepare_file
from pilotfish.testing.config import WEB_SERVICE
from pilotfish.testing.generators import builtin
from pilotfish.validation import cel, make_kinds, make_validator

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "istio"
GOOD = WEB_SERVICE
WEB = "web.shop.svc.cluster.local"
# Sorted after the good file: where both define an object, the good file's is used.
GOOD_NAME, FUZZ_NAME = "b-good.yaml", "z-fuzz"
CPU_SECONDS = 30.0  # per example: past this it is a hang, whatever the deadline says

# Built once: the catalog and CEL programs are the expensive part, and only read.
VALIDATOR = make_validator()
KINDS = make_kinds()
GENERATORS = builtin()
MESH = MeshSettings()
# CEL's environment raises the recursion limit when it is first built: build it before
# hypothesis notes the limit, or every test warns that it changed.
cel.compile_rule("true")
# Values of a megabyte are the point here; their reprs are large.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

# -- seeds ----------------------------------------------------------------------------------


@attrs.frozen
class Seed:
    """A real config file: its documents, as plain data."""

    name: str
    documents: list[Any]


def _seeds(paths: list[Path]) -> list[Seed]:
    """Files with at least one object of a kind the store knows: objects of other kinds
    are set aside with a warning, and would teach the fuzz nothing past that."""
    out = []
    for path in paths:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
                         if isinstance(d, dict)]
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # a document libyaml reads differently from Go (test_corpus.py)
        if any(KINDS.lookup_kind(split_api_version(str(d.get("apiVersion")))[0],
                                 str(d.get("kind"))) for d in documents):
            out.append(Seed(path.name, documents))
    return out


DEMO_SEEDS = _seeds(sorted((ROOT / "demo" / "config").glob("*.yaml")))
CORPUS_SEEDS = _seeds([
    path for folder in ("validation-valid", "validation-crds", "bookinfo", "analyzers")
    for path in sorted((CORPUS / folder).rglob("*.yaml"))]) if CORPUS.is_dir() else []


def _keys(value: Any, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                found.add(key)
            _keys(item, found)
    elif isinstance(value, list):
        for item in value:
            _keys(item, found)
    return found


# Field names real documents use: inserted keys reach the validators and translators
# behind them more often than random text would.
FIELDS = sorted(_keys([s.documents for s in DEMO_SEEDS + CORPUS_SEEDS], set()))
KIND_NAMES = sorted({(info.api_versions()[0], info.kind) for info in KINDS})

# -- values ---------------------------------------------------------------------------------

ODD_TEXT = [
    "", " ", "~", "null", "Null", "NULL", "yes", "no", "on", "off", "y", "n", "True",
    "0x1F", "0o17", "017", "0b101", "1e400", "-.inf", ".nan", ".NaN", "1_000", "1:30:00",
    "2001-12-14t21:59:43.10-05:00", "2001-01-01", "2001-13-45", "::", "::1", "*", "*.",
    "*.*", ".", "..", "-", "/", "//", "0.0.0.0/0", "::/0", "10.0.0.1/33", "999999",
    "-1", "0", "65536", "1.5", "10s", "-10s", "0s", "1ms", "1us", "99999999999h",
    "1.5.6", "a" * 64, "a" * 254, "A" * 63 + ".b", "${HOME}", "%s%n", "\\", "\x00", "\t",
    "\r\n", "\u2028", "\u202e", "\ufeff", "\u200b", "\U0001f600", "e\u0301", "\u0131", "\u01c5",
    "/path[0]", "{}", "[]", "'", '"', "#", "&x", "*x", "!!str", "<<", "|", ">",
    "istio-system", "default", "shop", "web", "mesh", "outbound|80||web",
    "web.shop.svc.cluster.local", "ISTIO_MUTUAL", "STRICT", "DISABLE", "HTTP", "TCP",
    "GRPC", "HTTPS", "TLS", "MUTUAL", "SIMPLE", "PASSTHROUGH", "DNS", "STATIC",
    "MESH_INTERNAL", "MESH_EXTERNAL", "REGISTRY_ONLY", "ALLOW", "DENY", "CUSTOM",
    "request.auth.claims[groups]", "source.ip", "spiffe://cluster.local/ns/a/sa/b",
]
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(ODD_TEXT), st.sampled_from(FIELDS or ["x"]),
)
# Keys: mostly names, sometimes what YAML reads as something else (8080:, true:, null:).
keys = st.one_of(st.sampled_from(FIELDS or ["x"]), st.text(max_size=12),
                 st.integers(-5, 70000), st.booleans(), st.none(), st.floats(width=16))
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        keys, children, max_size=5),
    max_leaves=30,
)
huge_text = st.builds(lambda char, size: char * size,
                      st.sampled_from(["x", "é", "\U0001f600", "{", "-", " "]),
                      st.sampled_from([1000, 70_000, 1024 * 1024 + 1]))
odd_unicode = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)

# -- mutations ------------------------------------------------------------------------------


EDGE_INTS = [0, 1, -1, 80, 443, 15001, 15006, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32,
             2 ** 63, -(2 ** 63) - 1, 10 ** 30]


def similar(value: Any) -> st.SearchStrategy[Any]:
    """Another value of the same type: an edge case where validation may let it through."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.one_of(st.sampled_from(EDGE_INTS), st.integers())
    if isinstance(value, float):
        return st.floats(allow_nan=True, allow_infinity=True)
    if isinstance(value, str):
        return st.one_of(st.sampled_from(ODD_TEXT), st.sampled_from(FIELDS or ["x"]),
                         st.text(max_size=20), st.just(value + value), st.just(value[:1]),
                         st.just(value.upper()), st.just(f"{value}.{value}"))
    if isinstance(value, list):
        return st.just(list(reversed(value))) | st.just([])
    if isinstance(value, dict):
        return st.just({}) | st.just(dict(list(value.items())[:1]))
    return scalars


def _places(value: Any, limit: int = 400) -> list[tuple[Any, Any]]:
    """(container, key) of every value under ``value``, breadth first, at most ``limit``."""
    out: list[tuple[Any, Any]] = []
    queue = [value]
    while queue and len(out) < limit:
        node = queue.pop(0)
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        for key, item in items:
            out.append((node, key))
            queue.append(item)
    return out


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 200, 200


def _retype(value: Any, to: str) -> Any:
    return {
        # Bounded: str() of a fanned-out subtree is the whole expansion (10**7 leaves).
        "str": lambda: _SHORT.repr(value) if isinstance(value, list | dict) else str(value),
        "int": lambda: len(value) if isinstance(value, str | list | dict) else 7,
        "list": lambda: [value],
        "map": lambda: {"value": value},
        "null": lambda: None,
        "unwrap": lambda: (next(iter(value.values()), None) if isinstance(value, dict)
                           else value[0] if isinstance(value, list) and value else value),
    }[to]()


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"n": value}
    return value


def _fan(value: Any, width: int, levels: int) -> Any:
    """The same subtree referenced ``width`` times, ``levels`` deep: YAML writes one anchor
    per level and aliases for the rest (an alias bomb when large)."""
    for _ in range(levels):
        value = [value] * width
    return value


@st.composite
def mutate(draw: st.DrawFn, data: Any, json_form: bool) -> Any:
    """One mutation somewhere in ``data`` (changed in place where possible)."""
    places = _places(data)
    # Most mutations keep the value's type, so that objects still pass validation often
    # enough for the translators to see them; the rest break types and shapes.
    op = draw(st.sampled_from(["similar", "similar", "similar", "drop", "drop", "copy",
                               "replace", "retype", "insert", "nest", "huge", "unicode",
                               "share", "fan", "root"]))
    if op == "root" or not places:
        return draw(st.one_of(trees, st.builds(_retype, st.just(data), st.sampled_from(
            ["str", "list", "null", "int"]))))
    container, key = places[draw(st.integers(0, len(places) - 1))]
    value = container[key]
    if op == "similar":
        container[key] = draw(similar(value))
    elif op == "drop":
        del container[key]
    elif op == "copy":  # a list item twice (often a duplicate name, port or host)
        target = value if isinstance(value, list) and value else container
        if isinstance(target, list):
            target.append(copy.deepcopy(target[draw(st.integers(0, len(target) - 1))]))
    elif op == "replace":
        container[key] = draw(trees)
    elif op == "retype":
        container[key] = _retype(value, draw(st.sampled_from(
            ["str", "int", "list", "map", "null", "unwrap"])))
    elif op == "insert":
        target = value if isinstance(value, dict) else container
        if isinstance(target, dict):
            target[draw(keys)] = draw(trees)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(trees))
    elif op == "nest":
        container[key] = _nest(value, draw(st.integers(1, 130)), draw(st.booleans()))
    elif op == "huge":
        container[key] = draw(huge_text)
    elif op == "unicode":
        container[key] = draw(odd_unicode)
    elif op == "share":
        other_container, other_key = places[draw(st.integers(0, len(places) - 1))]
        if other_container is not container or other_key != key:
            container[key] = other_container[other_key]  # the same object: an alias
    else:  # fan
        width = draw(st.integers(2, 10))
        # JSON has no aliases: the fan is written out, so keep it small there.
        levels = draw(st.integers(1, 2 if json_form else 7))
        container[key] = _fan(value, width, levels)
    return data


TEXT_SNIPPETS = [
    "<<: *missing", "*undefined", "&a", "a: &a [*a]", "b: &b {c: *b}", "!!binary aGVsbG8=",
    "!!binary ###", "!!set {a, b}", "!!omap [a: 1, a: 2]", "!!timestamp 2001-13-45",
    "!!float abc", "!!int 0xZZ", "!!python/object:os.system", "!!python/name:os.system",
    "? [a, b]\n: c", "? {a: b}\n: c", "---", "...", "%YAML 1.1", "%YAML 2.0",
    "%TAG ! tag:x,2000:", "\t", "{", "[", "}", "]", "'", '"', "|\n  x", ">-", "#", ":",
    "- -", "a: !!str", "b: !<tag:yaml.org,2002:int> 12x", "c: !local x", "<<: [*a, *a]",
    "<<: {x: 1}", "d: 1:2:3:4:5:6:7:8:9", "e: 0o99", "f: .inf", "\ufeff", "\x00", "\x85",
    "apiVersion: v1", "kind: List\nitems: [1, {kind: x}]",
]


@st.composite
def edit_text(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    op = draw(st.sampled_from(["snippet", "delete", "duplicate", "truncate", "chars",
                               "indent"]))
    at = draw(st.integers(0, max(0, len(lines) - 1)))
    if op == "snippet":
        indent = draw(st.sampled_from(["", "  ", "    "]))
        lines.insert(at, indent + draw(st.sampled_from(TEXT_SNIPPETS)))
    elif op == "delete" and lines:
        del lines[at]
    elif op == "duplicate" and lines:
        lines.insert(at, lines[at])  # often a duplicate key
    elif op == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    elif op == "chars":
        position = draw(st.integers(0, len(text)))
        return text[:position] + draw(st.text(max_size=8)) + text[position:]
    elif op == "indent" and lines:
        lines[at] = draw(st.sampled_from(["\t", " ", "   "])) + lines[at]
    return "\n".join(lines)


# -- writing documents ----------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    """What json.dumps can write: keys as text (YAML's 8080: and dates are not JSON)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def serialise(documents: list[Any], form: str) -> str:
    """Documents as one file; JSON holds one document, so several go in a List."""
    if form == "json":
        data = documents[0] if len(documents) == 1 else {
            "apiVersion": "v1", "kind": "List", "items": documents}
        return json.dumps(_json_ready(data), default=str)
    flow = form == "yaml-flow"
    # libyaml's emitter: a megabyte string fanned out ten times takes minutes in Python's.
    return yaml.dump_all(documents, Dumper=_DUMPER, default_flow_style=flow, sort_keys=False,
                         allow_unicode=True, width=2 ** 31 - 1)


@attrs.frozen
class File:
    """One fuzzed config file, and the good version of it loaded first (if any)."""

    content: str | bytes
    suffix: str = ".yaml"
    previous: str | None = None


@st.composite
def mutated_files(draw: st.DrawFn, seeds: list[Seed]) -> File:
    """A real file, loaded as it is first (the last good state), then mutated."""
    seed = draw(st.sampled_from(seeds))
    form = draw(st.sampled_from(["yaml", "yaml-flow", "json"]))
    documents = copy.deepcopy(seed.documents)
    for _ in range(draw(st.integers(1, 4))):
        documents = draw(mutate(documents, form == "json"))
    if not isinstance(documents, list):
        documents = [documents]
    try:
        text = serialise(documents, form)
    except (RecursionError, ValueError):  # nested deeper than the writer goes
        text = serialise([_nest(None, 200, True)], form)
    if draw(st.integers(0, 3)) == 0:
        text = draw(edit_text(text))
    suffix = ".json" if form == "json" else ".yaml"
    return File(text, suffix, serialise(seed.documents, form))


@st.composite
def generated_files(draw: st.DrawFn) -> File:
    shape = draw(st.sampled_from(["text", "bytes", "tree", "object"]))
    if shape == "text":
        alphabet = st.one_of(st.sampled_from(list("{}[]:-,&*!|>'\"#%@`?<= \n\t")),
                             st.characters(codec="utf-8"))
        return File(draw(st.text(alphabet, max_size=400)), draw(st.sampled_from(
            [".yaml", ".json"])))
    if shape == "bytes":
        return File(draw(st.binary(max_size=400)), draw(st.sampled_from([".yaml", ".json"])))
    if shape == "tree":
        documents = draw(st.lists(trees, min_size=1, max_size=3))
    else:
        api_version, kind = draw(st.sampled_from(KIND_NAMES))
        metadata = draw(st.fixed_dictionaries(
            {"name": st.one_of(st.sampled_from(["web", "a", "x-1"]), scalars)},
            optional={"namespace": st.one_of(st.sampled_from(["shop", "istio-system"]),
                                             scalars),
                      "labels": trees, "annotations": trees}))
        documents = [{"apiVersion": api_version, "kind": kind, "metadata": metadata,
                      "spec": draw(trees)}]
    form = draw(st.sampled_from(["yaml", "yaml-flow", "json"]))
    return File(serialise(documents, form), ".json" if form == "json" else ".yaml")


# -- the load path --------------------------------------------------------------------------


class Hang(Exception):
    """An example used more CPU than any file should cost."""


@contextlib.contextmanager
def cpu_alarm(seconds: float) -> Iterator[None]:
    """Raise Hang in the example once it has used ``seconds`` of CPU. A CPU-time timer
    (SIGVTALRM), so that pytest-timeout's wall-clock SIGALRM is left alone."""
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"the example used more than {seconds:g} s of CPU")

    previous = signal.signal(signal.SIGVTALRM, fire)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


class Caught(logging.Handler):
    """Exceptions pilotfish logged: each is one its safety nets caught, i.e. a bug."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)

    def check(self) -> None:
        if self.records:
            formatter = logging.Formatter()
            raise AssertionError("\n".join(
                f"{r.getMessage()}\n{formatter.formatException(r.exc_info)}"  # type: ignore[arg-type]
                for r in self.records))


@contextlib.contextmanager
def caught_exceptions() -> Iterator[Caught]:
    handler = Caught()
    logger = logging.getLogger("pilotfish")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _load(store: ConfigStore, folder: Path, name: str, content: str | bytes) -> Prepared:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    prepared = prepare_file(store, path, folder)
    prepared.apply(store)
    return prepared


def _snapshot(store: ConfigStore) -> dict[ConfigKey, ConfigObject]:
    return {obj.key: obj for obj in store.objects()}


def _proxies(objects: list[ConfigObject]) -> list[Proxy]:
    """Proxies the config concerns: what generation reads differs for each."""
    nodes = [("sidecar~10.0.0.9~client.shop~shop.svc.cluster.local", {}),
             ("router~10.0.0.8~gw.istio-system~istio-system.svc.cluster.local",
              {"LABELS": {"istio": "ingressgateway"}}),
             ("sidecar~10.0.0.7~app.shop~shop.svc.cluster.local", {"GENERATOR": "grpc"})]
    pods = [o for o in objects if o.kind in ("Pod", "WorkloadEntry")][:2]
    for pod in pods:
        status = pod.body.get("status")
        ip = status.get("podIP") if isinstance(status, dict) else None
        nodes.append((f"sidecar~{ip if isinstance(ip, str) else ''}~{pod.name}."
                      f"{pod.namespace}~{pod.namespace}.svc.cluster.local",
                      {"LABELS": dict(pod.labels)}))
    for gateway in [o for o in objects if o.kind == "Gateway"][:2]:
        selector = gateway.spec.get("selector")
        nodes.append((f"router~10.0.0.6~gw.{gateway.namespace}~{gateway.namespace}"
                      ".svc.cluster.local",
                      {"LABELS": dict(selector) if isinstance(selector, dict) else {}}))
    proxies = []
    for node_id, metadata in nodes:
        with contextlib.suppress(NodeIdError):  # a proxy no client could be: not ours
            proxies.append(parse_node(node_id, as_json(metadata)))
    return proxies


def serve(store: ConfigStore) -> push_context.PushContext:
    """What discovery does after a store change: a push context, the analyzers over it,
    then every type for each proxy through the generation cache (serialization included)."""
    push = push_context.build(store.objects(), MESH, "fuzz")
    analysis.run(analysis.inputs_for(store, push))
    state = PushState(push, {}).advance(push, None, GENERATORS)
    cache = GenerationCache(GENERATORS)
    for proxy in _proxies(store.objects()):
        for type_url in GENERATORS.type_urls(proxy.kind):
            with contextlib.suppress(GenerationError):  # recorded in cache.failures
                cache.resources(state, type_url, proxy)
    assert not cache.failures, sorted(cache.failures.values())
    return push


def check_file(file: File) -> None:
    with tempfile.TemporaryDirectory(prefix="pilotfish-fuzz-") as tmp, \
            caught_exceptions() as caught, cpu_alarm(CPU_SECONDS):
        folder = Path(tmp)
        store = ConfigStore(VALIDATOR, KINDS)
        assert not _load(store, folder, GOOD_NAME, GOOD).failed
        good = _snapshot(store)
        name = FUZZ_NAME + file.suffix
        if file.previous is not None:
            _load(store, folder, name, file.previous)
        before = _snapshot(store)
        origin = str(folder / name)
        previous_origin = {k: o for k, o in before.items() if o.source.file == origin}

        prepared = _load(store, folder, name, file.content)
        after = _snapshot(store)

        # Whatever is wrong is said, and names the file it is in.
        for error in store.errors():
            assert error.file in (origin, str(folder / GOOD_NAME)), error
            assert error.message, error
        # The good file's objects are untouched.
        for key, obj in good.items():
            assert after[key].same_content(obj), key
        if prepared.failed is not None:
            event("the file is refused whole")
            assert prepared.failed.file == origin
            # A file that no longer parses keeps everything it held.
            assert after.keys() == before.keys()
            assert all(after[k] is before[k] for k in before)
        else:
            refused = {c.obj.key for c in prepared.checked if not c.ok}
            accepted = {c.obj.key for c in prepared.checked if c.ok}
            event("objects: " + ("none" if not prepared.checked else "all accepted"
                                 if not refused else "none accepted" if len(refused) == len(
                                     prepared.checked) else "some accepted"))
            # An object refused (and not valid elsewhere in the file) keeps its last good
            # version.
            for key in (refused - accepted) & previous_origin.keys():
                assert after[key] is previous_origin[key], f"{key}: the last good one went"
        push = serve(store)
        assert push.service(WEB) is not None
        for problem in push.problems:  # left out by the guard: named, never silent
            event(f"guard: {problem.message[:60]}")
            assert problem.file == origin, problem
        caught.check()


@given(mutated_files(DEMO_SEEDS))
def test_mutated_demo_documents(file: File) -> None:
    check_file(file)


@pytest.mark.corpus
@given(mutated_files(CORPUS_SEEDS or DEMO_SEEDS))
def test_mutated_corpus_documents(file: File) -> None:
    check_file(file)


# What the fuzz found, replayed by every run (each has a regression test of its own).
FOUND = [
    # tests/unit/core/test_yamlload_store.py: an integer label key crashed validation.
    File("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: web\n"
         "  labels:\n    0: null\nspec: {}\n"),
    # tests/unit/validation/test_cel.py: a port past int64 crashed the CEL binding.
    File("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
         "  name: valid-service-entry\nspec:\n  hosts:\n  - eu.bookinfo.com\n  ports:\n"
         "  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: DNS\n"
         "  endpoints:\n  - address: t.istio-system.svc.cluster.local\n    ports:\n"
         "      http: 9223372036854775808\n"),
]


@given(generated_files())
@example(FOUND[0])
@example(FOUND[1])
def test_generated_files(file: File) -> None:
    check_file(file)


def test_the_seeds_are_there() -> None:
    assert len(DEMO_SEEDS) == 4
    assert not CORPUS.is_dir() or len(CORPUS_SEEDS) >= 120
