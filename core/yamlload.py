"""Multi-document YAML (and JSON) → config objects, remembering the line of every field.

PyYAML composes a node tree that carries source marks; we construct plain Python data
from the same nodes and keep a map from field path to line, so that validation errors
can say ``file.yaml:14: spec.http[0].route[0].destination.host: Required value``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import yaml

from pilotfish.core.objects import ConfigObject, FieldPath, Source, as_json

try:  # libyaml is much faster and keeps marks too
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - pure-Python fallback
    _Loader = yaml.SafeLoader


@attrs.frozen
class LoadError:
    """A problem with a file or one document in it, before any schema is looked at."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else (
            f"{self.file}: {self.message}"
        )


@attrs.frozen
class Document:
    data: Any
    line: int
    lines: Mapping[FieldPath, int]


class YAMLFileError(Exception):
    """The file as a whole could not be parsed; nothing in it can be trusted."""

    def __init__(self, error: LoadError) -> None:
        super().__init__(str(error))
        self.error = error


@attrs.frozen
class LoadLimits:
    """What one config file may hold before it is refused (with an error naming the file,
    the limit and how to raise it), so that no file can exhaust memory or time.

    Set in the mesh config under ``discovery.configLimits``. The defaults are far above
    what real config needs (Istio objects are a few hundred nodes) and far below what
    hurts: an alias bomb of a few hundred bytes expands to billions of nodes.
    """

    max_file_bytes: int = 16 * 1024 * 1024  # maxFileSize
    max_objects: int = 10_000  # maxObjectsPerFile, after ``kind: List`` is expanded
    max_depth: int = 100  # maxDepth: nesting of mappings and lists
    max_nodes: int = 200_000  # maxNodesPerDocument, aliases expanded
    max_scalar_bytes: int = 1024 * 1024  # maxScalarSize: one string or number

    def exceeded(self, field: str, what: str) -> str:
        value = getattr(self, LIMIT_FIELDS[field])
        return (f"{what} is over the limit of {value:,} (raise it with "
                f"discovery.configLimits.{field} in the mesh config)")


DEFAULT_LIMITS = LoadLimits()
INT_DIGITS = 4300  # Python's limit on converting decimal text to int (sys.int_info)
# Mesh config field → LoadLimits attribute.
LIMIT_FIELDS = {"maxFileSize": "max_file_bytes", "maxObjectsPerFile": "max_objects",
                "maxDepth": "max_depth", "maxNodesPerDocument": "max_nodes",
                "maxScalarSize": "max_scalar_bytes"}


def _flow_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest outside quoted strings and comments. Checked before
    composing: libyaml's composer recurses in C, and JSON's decoder in Python."""
    depth = deepest = 0
    quote = previous = ""
    escaped = comment = False
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and previous in ("", " ", "\t", "\n"):
            comment = True  # YAML: only after white space; "a#b" is a scalar
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
        previous = char
    return deepest


def _check_flow_depth(text: str, file: str, limits: LoadLimits) -> None:
    # Counting brackets is cheap; the scan only runs when there could be enough of them.
    if text.count("[") + text.count("{") > limits.max_depth and (
            _flow_depth(text) > limits.max_depth):
        raise YAMLFileError(LoadError(file, 0, limits.exceeded(
            "maxDepth", "nesting depth")))


def _measure(root: yaml.Node, file: str, limits: LoadLimits) -> dict[FieldPath, int]:
    """Check one composed document against the limits and say where each field is.

    Iterative, and each distinct node is walked once: a node an alias shares is counted
    for every place it appears (the expanded size) without being walked again. Duplicate
    keys in a mapping are refused, as Kubernetes' strict decoding refuses them.
    """
    def line(node: yaml.Node) -> int:
        return int(node.start_mark.line) + 1

    # Expanded sizes, children first (post-order), memoized by node identity.
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if id(node) in sizes:
            continue
        if depth > limits.max_depth:
            raise YAMLFileError(LoadError(file, line(node), limits.exceeded(
                "maxDepth", "nesting depth")))
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > limits.max_scalar_bytes:
                raise YAMLFileError(LoadError(file, line(node), limits.exceeded(
                    "maxScalarSize", f"a value of {len(node.value):,} characters")))
            digits = node.value.lstrip("+-").replace("_", "")
            if node.tag == "tag:yaml.org,2002:int" and len(digits) > INT_DIGITS:
                raise YAMLFileError(LoadError(file, line(node), (
                    f"an unquoted number of {len(digits):,} digits is more than a number can "
                    f"hold here ({INT_DIGITS:,}); quote it if it is text")))
            sizes[id(node)] = 1
            continue
        children = ([n for pair in node.value for n in pair]
                    if isinstance(node, yaml.MappingNode) else list(node.value))
        if done:
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > limits.max_nodes:
                raise YAMLFileError(LoadError(file, line(node), limits.exceeded(
                    "maxNodesPerDocument", f"a document of {total:,} nodes (aliases "
                    "expanded)")))
            sizes[id(node)] = total
            continue
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children
                     if id(child) not in sizes)

    # Lines of fields, each distinct node once (fields under a repeated alias keep the
    # line of the alias' first use); duplicate keys are found on the way.
    lines: dict[FieldPath, int] = {}
    seen: set[int] = set()
    walk: list[tuple[yaml.Node, FieldPath]] = [(root, ())]
    while walk:
        node, path = walk.pop()
        lines.setdefault(path, line(node))
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = key_node.value
                if key in keys and key != "<<":
                    raise YAMLFileError(LoadError(file, line(key_node), (
                        f"duplicate key {key!r} (first at line {keys[key]}); a mapping may "
                        "hold each key once")))
                keys[key] = line(key_node)
                lines[(*path, key)] = line(key_node)
                walk.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            walk.extend((item, (*path, index)) for index, item in enumerate(node.value))
    return lines


def _measure_data(data: Any, file: str, limits: LoadLimits) -> None:
    """The same limits for JSON decoded without the YAML composer (no aliases in JSON)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > limits.max_depth:
            raise YAMLFileError(LoadError(file, 0, limits.exceeded("maxDepth", "nesting depth")))
        if nodes > limits.max_nodes:
            raise YAMLFileError(LoadError(file, 0, limits.exceeded(
                "maxNodesPerDocument", "a document's node count")))
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and len(value) > limits.max_scalar_bytes:
            raise YAMLFileError(LoadError(file, 0, limits.exceeded(
                "maxScalarSize", f"a value of {len(value):,} characters")))


def parse_documents(text: str, file: str,
                    limits: LoadLimits = DEFAULT_LIMITS) -> list[Document]:
    """Every non-empty document of a YAML or JSON text. Raises YAMLFileError on bad syntax,
    a limit exceeded, or anything else that keeps the text from being read."""
    if len(text) > limits.max_file_bytes:
        raise YAMLFileError(LoadError(file, 0, limits.exceeded(
            "maxFileSize", f"a file of {len(text):,} characters")))
    _check_flow_depth(text, file, limits)
    if file.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise YAMLFileError(LoadError(file, exc.lineno, f"invalid JSON: {exc.msg}")) from exc
        except (ValueError, RecursionError) as exc:  # e.g. an integer too long to convert
            raise YAMLFileError(LoadError(file, 0, f"invalid JSON: {exc}")) from exc
        # Line numbers for JSON come from the YAML composer below (JSON is YAML 1.2 flow).
        try:
            return _parse_yaml(text, file, limits) or [Document(data, 1, {})]
        except YAMLFileError as exc:
            if "configLimits" in exc.error.message or "duplicate key" in exc.error.message:
                raise
            _measure_data(data, file, limits)
            return [Document(data, 1, {})]
    return _parse_yaml(text, file, limits)


def _parse_yaml(text: str, file: str, limits: LoadLimits) -> list[Document]:
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines = _measure(node, file, limits)
            data = loader.construct_document(node)
            if data is None:
                continue
            docs.append(Document(data, node.start_mark.line + 1, lines))
    except YAMLFileError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "syntax error"
        raise YAMLFileError(LoadError(file, line, f"invalid YAML: {problem}")) from exc
    except Exception as exc:  # a constructor's ValueError, RecursionError, MemoryError ...
        raise YAMLFileError(LoadError(file, 0, f"invalid YAML: {exc}")) from exc
    finally:
        loader.dispose()
    return docs


def _expand_lists(doc: Document) -> Iterator[Document]:
    """``kind: List`` (what kubectl prints) holds its objects under ``items``."""
    data = doc.data
    if isinstance(data, dict) and data.get("kind") == "List" and isinstance(
        data.get("items"), list
    ):
        for index, item in enumerate(data["items"]):
            prefix: FieldPath = ("items", index)
            lines = {
                path[2:]: line for path, line in doc.lines.items() if path[:2] == prefix
            }
            yield Document(item, lines.get((), doc.line), lines)
    else:
        yield doc


def _yaml_hint(value: Any) -> str:
    # YAML 1.1 reads on/off/yes/no as booleans and bare digits as numbers.
    return " (YAML read an unquoted word or number; quote it)" if isinstance(
        value, bool | int | float) else ""


def to_object(doc: Document, file: str, default_namespace: str = "default") -> (
    ConfigObject | LoadError
):
    """Turn one document into a ConfigObject, or say why it is not an object at all."""
    data = doc.data
    if not isinstance(data, dict):
        return LoadError(file, doc.line, f"expected an object, found {type(data).__name__}")
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    if not isinstance(api_version, str) or not api_version:
        return LoadError(file, doc.line, "apiVersion: Required value")
    if not isinstance(kind, str) or not kind:
        return LoadError(file, doc.line, "kind: Required value")
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        return LoadError(file, doc.line, f"{kind}: metadata: Required value")
    name = metadata.get("name")
    if name is not None and not isinstance(name, str):
        line = doc.lines.get(("metadata", "name"), doc.line)
        return LoadError(file, line, f"{kind}: metadata.name: must be a string, got "
                         f"{name!r}{_yaml_hint(name)}")
    if not name:
        line = doc.lines.get(("metadata",), doc.line)
        return LoadError(file, line, f"{kind}: metadata.name: Required value")
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        line = doc.lines.get(("metadata", "namespace"), doc.line)
        return LoadError(file, line, f"{kind} {name}: metadata.namespace: must be a string, "
                         f"got {namespace!r}{_yaml_hint(namespace)}")
    namespace = namespace or ""
    return ConfigObject(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace or default_namespace,
        # What kubectl would send: validation, the model and translators all read string
        # keys (``labels: {0: x}`` is the label "0"), never YAML's ints, booleans or dates.
        body=as_json(data),
        source=Source(file, doc.line),
        lines=doc.lines,
    )


def load_text(
    text: str, file: str, default_namespace: str = "default",
    limits: LoadLimits = DEFAULT_LIMITS,
) -> tuple[list[ConfigObject], list[LoadError]]:
    """All objects in a text, plus per-document problems. Raises YAMLFileError when the
    text cannot be read as a whole (syntax, a limit)."""
    objects: list[ConfigObject] = []
    errors: list[LoadError] = []
    for doc in parse_documents(text, file, limits):
        for item in _expand_lists(doc):
            if len(objects) + len(errors) >= limits.max_objects:
                raise YAMLFileError(LoadError(file, item.line, limits.exceeded(
                    "maxObjectsPerFile", "the number of objects")))
            result = to_object(item, file, default_namespace)
            if isinstance(result, LoadError):
                errors.append(result)
            else:
                objects.append(result)
    return objects, errors
