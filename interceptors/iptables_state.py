"""What ``iptables-save`` says is installed, compared with a plan; how to take ours out.

Sans-IO. ``parse_save`` reads ``iptables-save`` output into tables of chains and rules.
``mismatches`` lists why an installed state is not exactly a plan's — missing or extra
``ISTIO*`` chains, a chain holding a different number of rules, a built-in chain jumping
into ours a different number of times (a duplicated jump after two careless runs). Rule
*presence* is checked separately with ``-C`` (``iptables_rules.check_text``), because
``iptables-save`` prints rules in a normalised form no planner should try to predict.

``cleanup_text`` is ``iptables-restore --noflush`` input that removes everything of ours
that is installed: every jump into an ``ISTIO*`` chain (written back exactly as
``iptables-save`` printed it, so the delete matches), then every ``ISTIO*`` chain, flushed
before any is deleted because they jump into one another. Restore applies it atomically.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

import attrs

from pilotfish.interceptors.iptables_rules import (
    BUILTIN_CHAINS,
    TABLES,
    Rule,
    chain_rule_counts,
    is_ours,
)


@attrs.frozen
class SavedRule:
    chain: str
    spec: str  # everything after "-A CHAIN", as iptables-save printed it

    @property
    def target(self) -> str | None:
        try:
            words = shlex.split(self.spec)
        except ValueError:  # an unbalanced quote in someone's comment: fall back to blanks
            words = self.spec.split()
        return words[words.index("-j") + 1] if "-j" in words[:-1] else None


@attrs.frozen
class SavedTable:
    chains: tuple[str, ...]  # in the order iptables-save declared them
    rules: tuple[SavedRule, ...]

    def ours(self) -> list[str]:
        return [chain for chain in self.chains if is_ours(chain)]

    def jumps_into_ours(self) -> list[SavedRule]:
        return [r for r in self.rules if not is_ours(r.chain) and is_ours(r.target or "")]


def parse_save(text: str) -> dict[str, SavedTable]:
    """``iptables-save`` output → table name → chains and rules."""
    tables: dict[str, SavedTable] = {}
    table: str | None = None
    chains: list[str] = []
    rules: list[SavedRule] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table, chains, rules = line[1:].strip(), [], []
        elif table is None:
            raise ValueError(f"iptables-save line {number}: {line!r} outside a table")
        elif line.startswith(":"):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            rules.append(SavedRule(chain, rest[0] if rest else ""))
        elif line == "COMMIT":
            tables[table] = SavedTable(tuple(chains), tuple(rules))
            table = None
        else:
            raise ValueError(f"iptables-save line {number}: unexpected {line!r}")
    return tables


def has_residue(state: dict[str, SavedTable]) -> bool:
    """Is anything of ours (an ``ISTIO*`` chain) installed?"""
    return any(table.ours() for table in state.values())


def mismatches(rules: Iterable[Rule], state: dict[str, SavedTable]) -> list[str]:
    """Why ``state`` does not hold exactly the chains and rule counts ``rules`` plan."""
    want = chain_rule_counts(rules)
    have: dict[tuple[str, str], int] = {}
    problems = []
    for name, table in state.items():
        for chain in table.ours():
            have[(name, chain)] = sum(1 for r in table.rules if r.chain == chain)
        jumps = len(table.jumps_into_ours())
        if jumps:
            have[(name, "->")] = jumps
    for key in sorted(set(want) | set(have)):
        table_name, chain = key
        what = (f"{table_name}: jumps into ISTIO chains" if chain == "->"
                else f"{table_name} {chain}")
        if key not in have:
            problems.append(f"{what}: missing" if chain != "->" else f"{what}: none")
        elif key not in want:
            problems.append(f"{what}: not planned ({have[key]} rules)" if chain != "->"
                            else f"{what}: {have[key]}, none planned")
        elif have[key] != want[key]:
            problems.append(f"{what}: {have[key]} rules, planned {want[key]}")
    return problems


def cleanup_text(state: dict[str, SavedTable]) -> str:
    """``iptables-restore --noflush`` input removing every jump into and every chain of
    ours; empty when nothing of ours is installed."""
    lines: list[str] = []
    for name in TABLES:
        table = state.get(name)
        if table is None or not table.ours():
            continue
        lines.append(f"*{name}")
        lines += [f"-D {r.chain} {r.spec}" for r in table.jumps_into_ours()]
        lines += [f"-F {chain}" for chain in table.ours()]
        lines += [f"-X {chain}" for chain in table.ours()]
        lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def foreign_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Planned rules that live in built-in chains and do not jump into ours (interface
    returns, TPROXY marks): ``cleanup_text`` cannot recognise them from the state, so
    removal deletes them one by one from the plan."""
    return [r for r in rules if r.chain in BUILTIN_CHAINS and not r.jumps_to_ours]
