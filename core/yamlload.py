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

from pilotfish.core.objects import ConfigObject, FieldPath, Source

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


def _index_lines(node: yaml.Node, path: FieldPath, out: dict[FieldPath, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                out[child] = key_node.start_mark.line + 1
                _index_lines(value_node, child, out)
                out[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), out)


def parse_documents(text: str, file: str) -> list[Document]:
    """Every non-empty document of a YAML or JSON text. Raises YAMLFileError on bad syntax."""
    if file.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise YAMLFileError(LoadError(file, exc.lineno, f"invalid JSON: {exc.msg}")) from exc
        # Line numbers for JSON come from the YAML composer below (JSON is YAML 1.2 flow).
        try:
            return _parse_yaml(text, file) or [Document(data, 1, {})]
        except YAMLFileError:
            return [Document(data, 1, {})]
    return _parse_yaml(text, file)


def _parse_yaml(text: str, file: str) -> list[Document]:
    loader = _Loader(text)
    docs: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[FieldPath, int] = {}
            _index_lines(node, (), lines)
            data = loader.construct_document(node)
            if data is None:
                continue
            docs.append(Document(data, node.start_mark.line + 1, lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "syntax error"
        raise YAMLFileError(LoadError(file, line, f"invalid YAML: {problem}")) from exc
    except yaml.YAMLError as exc:
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
        body=data,
        source=Source(file, doc.line),
        lines=doc.lines,
    )


def load_text(
    text: str, file: str, default_namespace: str = "default"
) -> tuple[list[ConfigObject], list[LoadError]]:
    """All objects in a text, plus per-document problems. Raises YAMLFileError on bad syntax."""
    objects: list[ConfigObject] = []
    errors: list[LoadError] = []
    for doc in parse_documents(text, file):
        for item in _expand_lists(doc):
            result = to_object(item, file, default_namespace)
            if isinstance(result, LoadError):
                errors.append(result)
            else:
                objects.append(result)
    return objects, errors
