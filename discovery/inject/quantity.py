"""Kubernetes resource quantities in their canonical form (``4000m`` → ``4``, ``1024Mi`` →
``1Gi``), as the API server stores them and Istio's injector writes them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|"
                       r"[eE][+-]?\d+)?\Z")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_NANO = Decimal("1e-9")


def canonical(value: Any) -> Any:
    """The canonical text of a quantity; anything that is not one is returned as given."""
    match = _QUANTITY.match(str(value).strip()) if isinstance(value, str | int) and \
        not isinstance(value, bool) else None
    if match is None:
        return value
    try:
        number = Decimal(match[1])
    except InvalidOperation:
        return value
    suffix = match[2] or ""
    if suffix in _BINARY:
        amount = number * (Decimal(1024) ** _BINARY[suffix])
        if abs(amount) >= 1024 and amount == amount.to_integral_value():
            whole, power = int(amount), 0
            while whole % 1024 == 0 and power < 6:
                whole //= 1024
                power += 1
            return f"{whole}{_BINARY_SUFFIX[power]}"
        return _decimal(amount, exponent_form=False)
    if suffix[:1] in ("e", "E"):
        return _decimal(number * Decimal(10) ** int(suffix[1:]), exponent_form=True)
    return _decimal(number * Decimal(10) ** _DECIMAL[suffix], exponent_form=False)


def _decimal(amount: Decimal, exponent_form: bool) -> str:
    # Precision below a nano-unit is rounded up, as the API server does.
    amount = (amount / _NANO).to_integral_value(rounding=ROUND_CEILING) * _NANO
    if amount == 0:
        return "0"
    exponent = -9
    while exponent < 18:
        scaled = amount / Decimal(10) ** (exponent + 3)
        if scaled != scaled.to_integral_value():
            break
        exponent += 3
    mantissa = int(amount / Decimal(10) ** exponent)
    if exponent_form:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def canonical_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """A container's ``resources`` with every request and limit in canonical form."""
    out = dict(resources)
    for part in ("requests", "limits"):
        if isinstance(out.get(part), Mapping):
            out[part] = {name: canonical(amount) for name, amount in out[part].items()}
    return out
