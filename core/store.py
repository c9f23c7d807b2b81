"""The config store: the current, validated objects, fed by config sources.

Objects arrive grouped by *origin* (a file path, or a source name such as
``kubernetes``). An origin's content is replaced as a whole (a file was re-read) or one
object at a time (a watch event). Every object is validated before it is accepted; an
invalid object is reported and the last good version of the same object from the same
origin stays in force, so a broken edit never takes working config away.

The store is synchronous and does no IO. Listeners are told which keys changed.
Validation is split from the change itself: ``check`` touches no state, so a source may
run it in a worker thread (schemas and CEL rules are the expensive part) and hand the
result to ``replace_checked`` on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import attrs

from pilotfish.core.objects import BUILTIN_KINDS, ConfigKey, ConfigObject, KindInfo


@attrs.frozen
class ConfigError:
    """One problem with config, named by file, line, object and field."""

    file: str
    line: int
    message: str
    key: ConfigKey | None = None
    field: str = ""
    severity: str = "error"  # "error" rejects the object; "warning" only reports

    def as_dict(self) -> dict[str, object]:
        key = self.key
        return {
            "file": self.file, "line": self.line, "severity": self.severity,
            "kind": key.kind if key else "", "namespace": key.namespace if key else "",
            "name": key.name if key else "", "field": self.field, "message": self.message,
        }

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f" {self.key.kind} {self.key.namespace + '/' if self.key.namespace else ''}" \
            f"{self.key.name}:" if self.key else ""
        field = f" {self.field}:" if self.field else ""
        label = "" if self.severity == "error" else f" {self.severity}:"
        return f"{where}:{label}{what}{field} {self.message}"


class Validator(Protocol):
    def __call__(self, obj: ConfigObject) -> list[ConfigError]: ...


def accept_all(obj: ConfigObject) -> list[ConfigError]:
    return []


@attrs.frozen
class Checked:
    """One object after validation (``ConfigStore.check``): accepted or not, and why."""

    obj: ConfigObject
    ok: bool
    problems: tuple[ConfigError, ...] = ()


@attrs.frozen
class StoreUpdate:
    """What one change to the store did."""

    changed: frozenset[ConfigKey]
    errors: tuple[ConfigError, ...] = ()


Listener = Callable[[StoreUpdate], None]


class KindRegistry:
    """Kinds the store accepts, looked up by (group, kind); versions are checked too."""

    def __init__(self, kinds: Iterable[KindInfo] = BUILTIN_KINDS) -> None:
        self._by_group_kind: dict[tuple[str, str], KindInfo] = {}
        for info in kinds:
            self.add(info)

    def add(self, info: KindInfo) -> None:
        self._by_group_kind[(info.group, info.kind)] = info

    def lookup(self, obj: ConfigObject) -> KindInfo | None:
        return self._by_group_kind.get((obj.group, obj.kind))

    def lookup_kind(self, group: str, kind: str) -> KindInfo | None:
        return self._by_group_kind.get((group, kind))

    def __iter__(self) -> Iterator[KindInfo]:
        return iter(self._by_group_kind.values())


class ConfigStore:
    def __init__(
        self, validator: Validator = accept_all, kinds: KindRegistry | None = None
    ) -> None:
        self._validate = validator
        self.kinds = kinds or KindRegistry()
        # origin → key → last good object from that origin
        self._origins: dict[str, dict[ConfigKey, ConfigObject]] = {}
        # The merged view: key → object (first origin in sort order wins on conflict)
        self._objects: dict[ConfigKey, ConfigObject] = {}
        self._errors: dict[str, list[ConfigError]] = {}
        # Objects two origins define: the loser's warning names both (``_commit``).
        self._conflicts: dict[ConfigKey, ConfigError] = {}
        self._listeners: list[Listener] = []
        self.revision = 0

    # -- reading -----------------------------------------------------------------

    def get(self, key: ConfigKey) -> ConfigObject | None:
        return self._objects.get(key)

    def objects(
        self, kind: str | None = None, namespace: str | None = None
    ) -> list[ConfigObject]:
        return [
            obj
            for obj in self._objects.values()
            if (kind is None or obj.kind == kind)
            and (namespace is None or obj.namespace == namespace)
        ]

    def __len__(self) -> int:
        return len(self._objects)

    def errors(self) -> list[ConfigError]:
        """Every problem currently standing, across origins."""
        return [*(err for origin in sorted(self._errors) for err in self._errors[origin]),
                *(self._conflicts[key] for key in sorted(self._conflicts, key=str))]

    def origins(self) -> list[str]:
        return sorted(set(self._origins) | set(self._errors))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- writing -----------------------------------------------------------------

    def check(self, objects: Iterable[ConfigObject]) -> list[Checked]:
        """Normalise and validate objects without changing the store (thread-safe: the
        validator and the kind registry are only read)."""
        out = []
        for obj in objects:
            obj = self._normalise(obj)
            ok, problems = self._check(obj)
            out.append(Checked(obj, ok, tuple(problems)))
        return out

    def replace(
        self,
        origin: str,
        objects: Iterable[ConfigObject],
        load_errors: Iterable[ConfigError] = (),
    ) -> StoreUpdate:
        """The origin now holds exactly these objects (those that pass validation)."""
        return self.replace_checked(origin, self.check(objects), load_errors)

    def replace_checked(
        self,
        origin: str,
        checked: Iterable[Checked],
        load_errors: Iterable[ConfigError] = (),
    ) -> StoreUpdate:
        """``replace`` with objects ``check`` already validated."""
        previous = self._origins.get(origin, {})
        accepted: dict[ConfigKey, ConfigObject] = {}
        errors: list[ConfigError] = list(load_errors)
        for item in checked:
            obj, ok, problems = item.obj, item.ok, item.problems
            errors.extend(problems)
            if obj.key in accepted:
                errors.append(ConfigError(
                    obj.source.file, obj.source.line,
                    f"duplicate object; the one at line {accepted[obj.key].source.line} is used",
                    obj.key, severity="warning",
                ))
                continue
            if not ok:
                if obj.key in previous:  # keep the last good version
                    accepted[obj.key] = previous[obj.key]
                continue
            accepted[obj.key] = obj
        if accepted:
            self._origins[origin] = accepted
        else:
            self._origins.pop(origin, None)
        self._set_errors(origin, errors)
        return self._commit(set(previous) | set(accepted), errors)

    def failed(self, origin: str, error: ConfigError) -> StoreUpdate:
        """The origin could not be read at all (e.g. broken YAML): keep what it held."""
        self._set_errors(origin, [error])
        return self._commit(set(), [error])

    def remove(self, origin: str) -> StoreUpdate:
        previous = self._origins.pop(origin, {})
        self._errors.pop(origin, None)
        return self._commit(set(previous), [])

    def upsert(self, origin: str, obj: ConfigObject) -> StoreUpdate:
        """One object changed in an origin that is fed object by object."""
        return self.apply_checked(origin, [(obj.key, item) for item in self.check([obj])])

    def delete(self, origin: str, key: ConfigKey) -> StoreUpdate:
        return self.apply_checked(origin, [(key, None)])

    def apply_checked(self, origin: str, changes: Iterable[tuple[ConfigKey, Checked | None]]
                      ) -> StoreUpdate:
        """Objects of an origin fed object by object (a watch) changed, in this order: an
        object ``check`` validated, or ``None`` for a key deleted. An invalid object keeps
        the last good version of it in force; its problems stand until it changes again.
        One notification for the whole batch."""
        latest = dict(changes)  # the last change of a key is what holds
        objects = self._origins.setdefault(origin, {})
        touched: set[ConfigKey] = set()
        errors: list[ConfigError] = []
        for key, item in latest.items():
            if item is None:
                if objects.pop(key, None) is not None:
                    touched.add(key)
                continue
            errors.extend(item.problems)
            if item.ok:
                objects[key] = item.obj
                touched.add(key)
        if not objects:
            del self._origins[origin]
        self._set_errors(origin, [e for e in self._errors.get(origin, []) if e.key not in latest]
                         + errors)
        return self._commit(touched, errors)

    # -- internals ---------------------------------------------------------------

    def _normalise(self, obj: ConfigObject) -> ConfigObject:
        info = self.kinds.lookup(obj)
        if info is not None and not info.namespaced and obj.namespace:
            return attrs.evolve(obj, namespace="")
        return obj

    def _check(self, obj: ConfigObject) -> tuple[bool, list[ConfigError]]:
        """(accepted, problems). Unknown kinds are reported as warnings and not accepted."""
        info = self.kinds.lookup(obj)
        if info is None:
            return False, [ConfigError(
                obj.source.file, obj.source.line,
                f"unknown kind {obj.kind} ({obj.api_version}); ignored", obj.key,
                severity="warning",
            )]
        version = obj.api_version.rpartition("/")[2]
        if version not in info.versions:
            return False, [ConfigError(
                obj.source.file, obj.source.line,
                f"apiVersion {obj.api_version!r} is not served for {obj.kind}; "
                f"expected one of {', '.join(info.api_versions())}",
                obj.key, "apiVersion",
            )]
        problems = self._validate(obj)
        return not any(p.severity == "error" for p in problems), problems

    @staticmethod
    def _conflict(holders: list[ConfigObject]) -> ConfigError | None:
        """Two origins define one object: the first in path order is used; say so, naming
        both, on the one that is not."""
        if len(holders) < 2:
            return None
        used, ignored = holders[0], holders[1]
        others = f" (and {len(holders) - 2} more)" if len(holders) > 2 else ""
        return ConfigError(
            ignored.source.file, ignored.source.line,
            f"also defined in {used.source}{others}; that one is used (the first in path "
            "order) and this one is ignored", ignored.key, severity="warning")

    def _set_errors(self, origin: str, errors: list[ConfigError]) -> None:
        if errors:
            self._errors[origin] = errors
        else:
            self._errors.pop(origin, None)

    def _commit(self, touched: set[ConfigKey], errors: list[ConfigError]) -> StoreUpdate:
        changed: set[ConfigKey] = set()
        conflicts: list[ConfigError] = []
        for key in touched:
            holders = [self._origins[origin][key] for origin in sorted(self._origins)
                       if key in self._origins[origin]]
            winner = holders[0] if holders else None
            conflict = self._conflict(holders)
            if conflict is None:
                self._conflicts.pop(key, None)
            elif self._conflicts.get(key) != conflict:
                self._conflicts[key] = conflict
                conflicts.append(conflict)
            current = self._objects.get(key)
            if winner is None:
                if current is not None:
                    del self._objects[key]
                    changed.add(key)
            elif current is None or not current.same_content(winner):
                self._objects[key] = winner
                changed.add(key)
            else:
                self._objects[key] = winner  # same content, newer source position
        update = StoreUpdate(frozenset(changed), (*errors, *conflicts))
        if changed:
            self.revision += 1
        if changed or errors:
            for listener in self._listeners:
                listener(update)
        return update
