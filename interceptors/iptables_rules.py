"""iptables rules as data, and the texts made from them: restore input, checks, deletions.

A ``Rule`` is one ``-A``/``-I`` line of one table, without the table. The planner builds
two lists (IPv4 and IPv6) with ``RuleBuilder``, which mirrors istio-iptables's builder:
a rule goes to both families, to one, or to both with a family-specific value (the
"versioned" rules: ``127.0.0.1/32`` in one, ``::1/128`` in the other).

``restore_text`` writes what ``iptables-restore --noflush`` reads, in Istio's layout:
tables in the order filter, mangle, nat, raw (empty ones left out), each opened by
``* table``, then ``-N`` for every chain that holds a rule (not the built-in ones) in
order of first use, then ``-N`` for any chain of ours that is only jumped to (the ambient
in-pod rules jump into an empty ``ISTIO_PRERT`` in ingress mode), then the rules in the
order they were added, then ``COMMIT``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

TABLES = ("filter", "mangle", "nat", "raw")
BUILTIN_CHAINS = frozenset({"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"})
CHAIN_PREFIX = "ISTIO"  # every chain the planner creates starts with it
FAMILY = "@family@"  # placeholder replaced by the family-specific value of a versioned rule


@attrs.frozen
class Rule:
    table: str
    chain: str
    args: tuple[str, ...]  # matches and target: ("-p", "tcp", "-j", "RETURN")
    position: int | None = None  # -I CHAIN POSITION when set, else -A CHAIN

    @property
    def target(self) -> str | None:
        args = self.args
        return args[args.index("-j") + 1] if "-j" in args else None

    @property
    def jumps_to_ours(self) -> bool:
        return (self.target or "").startswith(CHAIN_PREFIX)

    def line(self) -> str:
        """The rule as an iptables-restore line."""
        head = f"-A {self.chain}" if self.position is None else f"-I {self.chain} {self.position}"
        return " ".join((head, *self.args))

    def command(self, op: str) -> list[str]:
        """Arguments for ``iptables`` doing ``op`` (``-C`` check, ``-D`` delete) on this rule."""
        return ["-t", self.table, op, self.chain, *self.args]


def is_ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIX)


class RuleBuilder:
    """Collects rules for both families in order, as istio-iptables's builder does."""

    def __init__(self) -> None:
        self.v4: list[Rule] = []
        self.v6: list[Rule] = []

    def append(self, table: str, chain: str, *args: str, v4: bool = True,
               v6: bool = True) -> None:
        self._add(table, chain, args, None, v4, v6)

    def insert(self, table: str, chain: str, position: int, *args: str, v4: bool = True,
               v6: bool = True) -> None:
        self._add(table, chain, args, position, v4, v6)

    def append_versioned(self, table: str, chain: str, value_v4: str, value_v6: str,
                         *args: str) -> None:
        """One rule in each family, with ``FAMILY`` in ``args`` replaced per family."""
        self.v4.append(Rule(table, chain, tuple(value_v4 if a == FAMILY else a for a in args)))
        self.v6.append(Rule(table, chain, tuple(value_v6 if a == FAMILY else a for a in args)))

    def _add(self, table: str, chain: str, args: Sequence[str], position: int | None,
             v4: bool, v6: bool) -> None:
        rule = Rule(table, chain, tuple(args), position)
        if v4:
            self.v4.append(rule)
        if v6:
            self.v6.append(rule)


def restore_text(rules: Iterable[Rule]) -> str:
    """``iptables-restore`` input for ``rules`` (each line ends with a newline)."""
    by_table: dict[str, list[Rule]] = {table: [] for table in TABLES}
    for rule in rules:
        by_table[rule.table].append(rule)
    lines: list[str] = []
    for table, table_rules in by_table.items():
        if not table_rules:
            continue
        lines.append(f"* {table}")
        declared: list[str] = []
        for rule in table_rules:
            if rule.chain not in BUILTIN_CHAINS and rule.chain not in declared:
                declared.append(rule.chain)
        for rule in table_rules:
            if rule.jumps_to_ours and rule.target not in declared:
                declared.append(rule.target or "")
        lines += [f"-N {chain}" for chain in declared]
        lines += [rule.line() for rule in table_rules]
        lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def check_text(rules: Iterable[Rule]) -> str:
    """``iptables-restore --noflush`` input that only checks (``-C``) that each rule exists.

    Restore stops at the first rule that is missing and names its line, so one process
    answers "is everything in place?" for a whole family.
    """
    by_table: dict[str, list[Rule]] = {}
    for rule in rules:
        by_table.setdefault(rule.table, []).append(rule)
    lines: list[str] = []
    for table in TABLES:
        if table in by_table:
            lines.append(f"*{table}")
            lines += [" ".join(("-C", rule.chain, *rule.args)) for rule in by_table[table]]
            lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def chain_rule_counts(rules: Iterable[Rule]) -> dict[tuple[str, str], int]:
    """Planned number of rules per (table, chain) for our chains, and per (table, "->")
    for built-in-chain rules that jump into ours — what a correct state must hold exactly.
    A chain of ours that is only jumped to counts 0: restore creates it empty."""
    counts: dict[tuple[str, str], int] = {}
    for rule in rules:
        if rule.jumps_to_ours:
            counts.setdefault((rule.table, rule.target or ""), 0)
        if is_ours(rule.chain):
            key = (rule.table, rule.chain)
        elif rule.jumps_to_ours:
            key = (rule.table, "->")
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    return counts
