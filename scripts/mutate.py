"""Mutation testing of Pulso's core, one module at a time: ``make mutate MODULE=<name>``.

Each module of ``scripts/mutation.toml`` is run in its own copy of the tree under
``data/mutate/<name>/`` (the working tree is never touched, and a run can be stopped and resumed):

1. **mutmut** (pinned in the ``test`` extras) mutates the module's functions -- operators, comparisons,
   numbers, strings, arguments, returns -- and runs, for each mutant, only the selected tests that
   call the mutated function.
2. **SQL operator layer** (``sql = true``): mutmut does not look inside SQL text, and no well-kept tool
   mutates SQL embedded in Python strings, so this script does, narrowly: in every string literal of the
   module that reads as SQL it swaps one comparison (``>=`` -> ``>``, ``<`` -> ``<=``, ``=`` -> ``<>``
   ...), ``AND`` <-> ``OR``, ``min`` <-> ``max``, ``sum`` -> ``max``, ``count(DISTINCT`` -> ``count(``,
   ``IS NULL`` <-> ``IS NOT NULL``, ``DESC`` <-> ``ASC`` at a time, and runs the module's tests on each
   (a full pytest run per mutant, so it is the slow part).

A survivor is either listed under ``[modules.<name>.equivalent]`` with the reason it cannot change an
outcome, or it needs a test. ``--record`` writes the module's section of ``docs/testing.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "scripts" / "mutation.toml"
WORK = ROOT / "data" / "mutate"
DOC = ROOT / "docs" / "testing.md"
# Every top-level package the tests import: copied whole into mutmut's ``mutants/`` tree.
PACKAGES = ["pipelines", "alerts", "exporters", "dashboards", "app", "bench"]
KILLED = {"killed", "timeout", "caught by type check", "segfault"}

SQL_HINT = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE)\b.*\b(FROM|INTO|SET|TABLE|VIEW)\b", re.S | re.I)
# (pattern, replacement, label): one occurrence at a time. Comparisons only where spaced like SQL.
SQL_OPERATORS: list[tuple[str, str, str]] = [
    (r"(?<=\s)>=(?=\s)", ">", ">= -> >"),
    (r"(?<=\s)<=(?=\s)", "<", "<= -> <"),
    (r"(?<=\s)>(?=\s)", ">=", "> -> >="),
    (r"(?<=\s)<(?=\s)", "<=", "< -> <="),
    (r"(?<=\s)=(?=\s)", "<>", "= -> <>"),
    (r"(?<=\s)(<>|!=)(?=\s)", "=", "<> -> ="),
    (r"\bAND\b", "OR", "AND -> OR"),
    (r"\bOR\b(?!\s+(REPLACE|IGNORE)\b)", "AND", "OR -> AND"),  # not CREATE OR REPLACE, INSERT OR IGNORE
    (r"\bmin\(", "max(", "min -> max"),
    (r"\bmax\(", "min(", "max -> min"),
    (r"\bsum\(", "max(", "sum -> max"),
    (r"\bcount\(DISTINCT\s+", "count(", "count(DISTINCT -> count("),
    (r"\bIS NULL\b", "IS NOT NULL", "IS NULL -> IS NOT NULL"),
    (r"\bIS NOT NULL\b", "IS NULL", "IS NOT NULL -> IS NULL"),
    (r"\bDESC\b", "ASC", "DESC -> ASC"),
    (r"\bASC\b", "DESC", "ASC -> DESC"),
    (r"\bLEFT JOIN\b", "JOIN", "LEFT JOIN -> JOIN"),
    (r"\bBETWEEN\b", "NOT BETWEEN", "BETWEEN -> NOT BETWEEN"),
]


@dataclass
class Module:
    name: str
    source: str
    tests: list[str]
    sql: bool = False
    isolation: str = "fork"
    equivalent: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """Counts of one layer (mutmut or SQL): every mutant by status, survivors by name."""

    status: dict[str, str] = field(default_factory=dict)  # mutant -> status

    def counts(self, equivalent: dict[str, str]) -> dict[str, int]:
        killed = sum(1 for s in self.status.values() if s in KILLED)
        survived = [m for m, s in self.status.items() if s not in KILLED and s not in ("skipped", "not checked")]
        eq = [m for m in survived if m in equivalent]
        return {
            "mutants": len(self.status),
            "killed": killed,
            "equivalent": len(eq),
            "survived": len(survived) - len(eq),
            "not_checked": sum(1 for s in self.status.values() if s == "not checked"),
        }

    def survivors(self, equivalent: dict[str, str]) -> list[str]:
        return sorted(
            m
            for m, s in self.status.items()
            if s not in KILLED and s not in ("skipped", "not checked") and m not in equivalent
        )


def load_modules() -> dict[str, Module]:
    data = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    return {
        name: Module(
            name,
            m["source"],
            list(m["tests"]),
            bool(m.get("sql", False)),
            m.get("isolation", "fork"),
            dict(m.get("equivalent", {})),
        )
        for name, m in data["modules"].items()
    }


def copy_tree(dest: Path) -> None:
    """The working tree's files (tracked and new, not ignored) into ``dest``, mtimes kept."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in files:
        rel = raw.decode()
        if not rel or rel.startswith("data/") or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        source = ROOT / rel
        if target.exists() and target.stat().st_mtime == source.stat().st_mtime:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def mutmut_config(module: Module) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {toml_list([module.source])}\n"
        f"also_copy = {toml_list([p + '/' for p in PACKAGES] + ['docs/', 'workspace.yaml'])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(module.tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore"]\n'
        f"process_isolation = {json.dumps(module.isolation)}\n"
    )


def run_mutmut(module: Module, work: Path, max_children: int) -> Outcome:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (work / "pyproject.toml").write_text(pyproject + mutmut_config(module), encoding="utf-8")
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # a CI-only failure mode must not turn every mutant into a kill

    def mutmut_run(*names: str) -> None:
        with open(work / "mutmut.log", "a") as log:
            subprocess.run(
                ["nice", "-n", "10", str(mutmut), "run", "--max-children", str(max_children), *names],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )

    def results() -> Outcome:
        text = subprocess.run(
            [str(mutmut), "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True, check=False
        ).stdout
        outcome = Outcome()
        for line in text.splitlines():
            name, sep, status = line.strip().rpartition(": ")
            if sep and name:
                outcome.status[name] = status
        return outcome

    (work / "mutmut.log").write_text("")
    mutmut_run()
    outcome = results()
    if not outcome.status:
        tail = (work / "mutmut.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut produced no results for {module.name}:\n{tail}")
    # mutmut keeps a survivor's verdict from an earlier run even when tests were added since: named
    # mutants are always re-run, so every survivor is judged by today's tests.
    survivors = [m for m, s in outcome.status.items() if s not in KILLED and s not in ("skipped", "not checked")]
    if survivors:
        mutmut_run(*survivors)
        outcome = results()
    return outcome


def sql_string_spans(source: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the string literals in ``source`` that read as SQL."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    spans = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and SQL_HINT.search(tok.string):
            begin = starts[tok.start[0] - 1] + tok.start[1]
            end = starts[tok.end[0] - 1] + tok.end[1]
            spans.append((begin, end))
    return spans


def sql_mutants(source: str) -> list[tuple[str, str]]:
    """Every single-operator SQL mutant of ``source``: (name, mutated source). Names carry the line."""
    mutants = []
    for begin, end in sql_string_spans(source):
        literal = source[begin:end]
        for pattern, replacement, label in SQL_OPERATORS:
            for match in re.finditer(pattern, literal):
                # Skip what is Python inside an f-string's braces (e.g. {a >= b}).
                head = literal[: match.start()]
                if head.count("{") - head.count("{{") * 2 > head.count("}") - head.count("}}") * 2:
                    continue
                # `=` in an UPDATE's SET list is an assignment: swapping it only breaks the syntax.
                if label.startswith("= ") and re.search(r"\bSET\b(?:(?!\bWHERE\b).)*$", head, re.S | re.I):
                    continue
                line = source[: begin + match.start()].count("\n") + 1
                mutated = literal[: match.start()] + replacement + literal[match.end() :]
                mutants.append((f"sql:{line}:{label}", source[:begin] + mutated + source[end:]))
    counts: dict[str, int] = {}
    named = []
    for name, text in mutants:  # two swaps of one kind on one line: number them
        counts[name] = counts.get(name, 0) + 1
        named.append((name if counts[name] == 1 else f"{name}#{counts[name]}", text))
    return named


def run_sql_layer(module: Module, work: Path, timeout: float) -> Outcome:
    """Each SQL mutant of the module in ``work/sql`` (a plain copy), judged by the module's tests."""
    tree = work / "sql"
    copy_tree(tree)
    target = tree / module.source
    original = (ROOT / module.source).read_text(encoding="utf-8")
    target.write_text(original, encoding="utf-8")
    state_file = work / "sql-results.json"
    done: dict[str, str] = json.loads(state_file.read_text()) if state_file.exists() else {}
    outcome = Outcome()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *module.tests]
    clean = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if clean.returncode != 0:
        raise SystemExit(f"the tests of {module.name} fail without any mutant:\n{clean.stdout[-3000:]}")
    try:
        for name, text in sql_mutants(original):
            key = f"{name}|{hashlib.sha256(text.encode()).hexdigest()[:16]}"
            if key in done:
                outcome.status[name] = done[key]
                continue
            target.write_text(text, encoding="utf-8")
            try:
                result = subprocess.run(command, cwd=tree, env=env, capture_output=True, timeout=timeout, check=False)
                status = "killed" if result.returncode != 0 else "survived"
            except subprocess.TimeoutExpired:
                status = "timeout"
            outcome.status[name] = done[key] = status
            state_file.write_text(json.dumps(done, indent=1))
            print(f"  {name}: {status}", flush=True)
    finally:
        target.write_text(original, encoding="utf-8")
    return outcome


def changed_lines(work: Path, mutant: str) -> tuple[list[str], list[str]]:
    """The removed and added lines of a mutmut mutant's diff."""
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "show", mutant], cwd=work, capture_output=True, text=True, check=False).stdout
    lines = out.splitlines()
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def show(work: Path, mutant: str) -> str:
    """The diff of a mutmut survivor, on one line (for the record)."""
    removed, added = changed_lines(work, mutant)
    return " / ".join([*("- " + r.strip() for r in removed), *("+ " + a.strip() for a in added)])[:200]


SQL_WORDS = re.compile(
    r"\b(SELECT|FROM|WHERE|ORDER BY|GROUP BY|UPDATE|SET|INSERT|INTO|VALUES|NULL|JOIN|AND|BEGIN|TRANSACTION|CREATE|TABLE"
    r"|DELETE|EXISTS)\b|= \?",
    re.I,
)
STRING_LITERAL = re.compile(r"""(?<![\w'"])([rRbBuUfF]{0,2})("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
SQL_CASE = "only the letter case of a SQL text changes; DuckDB keywords and unquoted identifiers are case-insensitive"


def rule_equivalent(work: Path, mutant: str) -> str | None:
    """The reason a mutmut survivor is equivalent by a stated rule, or None.

    One rule: the mutant changes only the case of a string that reads as SQL and holds no quoted literal
    or quoted identifier (whose case would matter).
    """
    removed, added = changed_lines(work, mutant)
    if len(removed) != 1 or len(added) != 1 or removed[0] == added[0]:
        return None
    old, new = removed[0], added[0]
    if old.lower() != new.lower() or len(old) != len(new):
        return None
    first = next(i for i in range(len(old)) if old[i] != new[i])
    last = max(i for i in range(len(old)) if old[i] != new[i])
    for literal in STRING_LITERAL.finditer(old):
        prefix, quoted = literal.group(1), literal.group(2)
        if literal.start(2) < first and last < literal.end(2) - 1:
            body = quoted[1:-1]
            is_sql = len({w.upper() for w in SQL_WORDS.findall(body)}) >= 2 or bool(re.search(r"= \?", body))
            has_quotes = "'" in body or '"' in body
            return SQL_CASE if is_sql and not has_quotes and "f" not in prefix.lower() else None
    return None


def section(module: Module, python: Outcome, sql: Outcome | None, work: Path, seconds: float) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    load = os.getloadavg()[0]
    rows = [("mutmut (Python)", python)] + ([("SQL operators", sql)] if sql else [])
    lines = [
        f"<!-- mutate:{module.name} -->",
        f"### `{module.name}`: `{module.source}`",
        "",
        f"`make mutate MODULE={module.name}` on {datetime.now(UTC):%Y-%m-%d} (commit {commit.strip()}, "
        f"{seconds / 60:.0f} min, load {load:.1f}); tests: `{' '.join(module.tests)}`.",
        "",
        "| layer | mutants | killed | equivalent | survived | kill rate |",
        "|---|---|---|---|---|---|",
    ]
    for label, outcome in rows:
        c = outcome.counts(module.equivalent)
        judged = c["mutants"] - c["equivalent"] - c["not_checked"]
        rate = f"{100 * c['killed'] / judged:.1f} %" if judged else "n/a"
        lines.append(f"| {label} | {c['mutants']} | {c['killed']} | {c['equivalent']} | {c['survived']} | {rate} |")
    equivalents = [m for _, o in rows for m in o.status if m in module.equivalent and o.status[m] not in KILLED]
    by_rule = sorted(m for m in equivalents if module.equivalent[m] == SQL_CASE)
    listed = sorted(m for m in equivalents if module.equivalent[m] != SQL_CASE)
    if listed or by_rule:
        lines += ["", "Equivalent (cannot change an outcome):", ""]
        lines += [f"- `{m}`: {module.equivalent[m]}" for m in listed]
        if by_rule:
            lines.append(f"- {SQL_CASE[0].upper() + SQL_CASE[1:]}: " + ", ".join(f"`{m}`" for m in by_rule))
    survivors = [(label, m) for label, o in rows for m in o.survivors(module.equivalent)]
    if survivors:
        lines += ["", "Surviving, not yet killed by a test:", ""]
        for label, m in survivors:
            diff = show(work, m) if label.startswith("mutmut") else ""
            lines.append(f"- `{m}`" + (f": `{diff}`" if diff else ""))
    lines.append(f"<!-- /mutate:{module.name} -->")
    return "\n".join(lines)


def record(module: Module, text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    pattern = re.compile(rf"<!-- mutate:{re.escape(module.name)} -->.*?<!-- /mutate:{re.escape(module.name)} -->", re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", nargs="?", help="a module of scripts/mutation.toml (none: list them)")
    parser.add_argument("--max-children", type=int, default=2, help="mutmut workers (the machine has 2 cores)")
    parser.add_argument("--no-sql", action="store_true", help="skip the SQL operator layer")
    parser.add_argument("--sql-only", action="store_true", help="only the SQL operator layer")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per SQL mutant before it counts as killed")
    parser.add_argument("--record", action="store_true", help="write the module's section of docs/testing.md")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results of this module")
    args = parser.parse_args(argv)
    modules = load_modules()
    if not args.module:
        for m in modules.values():
            print(f"{m.name:16} {m.source}  (tests: {' '.join(m.tests)}{'; + SQL' if m.sql else ''})")
        return 0
    if args.module not in modules:
        parser.error(f"unknown module {args.module!r}; one of: {', '.join(modules)}")
    module = modules[args.module]
    work = WORK / module.name
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    copy_tree(work)
    started = time.monotonic()
    python = Outcome() if args.sql_only else run_mutmut(module, work, args.max_children)
    sql = run_sql_layer(module, work, args.timeout) if module.sql and not args.no_sql else None
    explicit = set(module.equivalent)
    for mutant in python.survivors(module.equivalent):
        reason = rule_equivalent(work, mutant)
        if reason:
            module.equivalent[mutant] = reason
    text = section(module, python, sql, work, time.monotonic() - started)
    print(text)
    stale = [m for m in explicit if m not in python.status and not (sql and m in sql.status)]
    if stale:
        print(f"equivalent entries that are no mutant any more (remove them): {stale}", file=sys.stderr)
    if args.record:
        record(module, text)
    survivors = python.survivors(module.equivalent) + (sql.survivors(module.equivalent) if sql else [])
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
