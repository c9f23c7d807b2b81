"""Refusals as kube-apiserver words them: a ``Status`` object with code, reason and message.

Clients branch on ``code`` and ``reason`` (the `kubernetes` client raises ``ApiException``
with the status and the body), so both follow the API conventions' table: 400 BadRequest,
401 Unauthorized, 404 NotFound, 405 MethodNotAllowed, 409 AlreadyExists or Conflict,
410 Expired or Gone, 415 UnsupportedMediaType, 422 Invalid, 500 InternalError,
504 Timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ApiError(Exception):
    """A request refused: ``status()`` is the body, ``code`` the HTTP status."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": self.message,
                                "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(resource: str, name: str, group: str = "") -> dict[str, Any]:
    # The conventions put the resource (plural) in `kind`.
    details: dict[str, Any] = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return details


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found',
                    _details(resource, name, group))


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {})


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists',
                    _details(resource, name, group))


def conflict(resource: str, name: str, group: str = "", why: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    why = why or ("the object has been modified; please apply your changes to the latest "
                  "version and try again")
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": '
                    f"{why}", _details(resource, name, group))


def gone(message: str, reason: str = "Expired") -> ApiError:
    return ApiError(410, reason, message)


def invalid(kind: str, name: str, causes: Sequence[tuple[str, str]], group: str = ""
            ) -> ApiError:
    """422: ``causes`` are (field, message) pairs."""
    qualified = f"{kind}.{group}" if group else kind
    text = "; ".join(f"{field}: {message}" for field, message in causes)
    details = {"name": name, "kind": kind,
               "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}
                          for field, message in causes]}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource: "
                    f"{method}", {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f'the body of the request was in an unknown format - accepted media '
                    f'types include: application/json-patch+json, '
                    f'application/merge-patch+json, application/apply-patch+yaml '
                    f'(got "{content_type}")')


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def too_large_resource_version(asked: int, current: int) -> ApiError:
    return ApiError(504, "Timeout",
                    f"Too large resource version: {asked}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge",
                                 "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})
