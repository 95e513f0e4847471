"""The maps in the documentation are kept true by tests, not by care.

- README's error table (``| code | status | meaning |``) names every error code Tollgate
  answers with, and nothing else, each with the status it is answered with. The codes are those
  of the error map (``db/errors.py``: ``RULES`` for the TG SQLSTATEs, ``CONSTRAINTS``, and the
  codes ``from_psycopg`` answers with, ``rule_violated`` for ``INVARIANTS`` among them) and of
  the refusals of the Python layers: the ``code`` argument of every ``DomainError``,
  ``error_response``, MCP ``_refusal`` and ``ApiError`` in ``api/`` and ``db/``, and the
  amount codes of ``api/models.py``. A code appears in one row only. That every SQLSTATE and
  constraint the schema raises is in the error map is tests/test_error_map.py's part.
- docs/ARCHITECTURE.md's SQLSTATE table lists exactly the TG SQLSTATEs of ``RULES``, with
  their status.
- README's SQL function table (``| function | what |``) lists exactly the functions
  ``tollgate_app`` may execute in Tollgate's schemas (those owned by ``tollgate_owner``), read
  from the catalog of a migrated database; where a row gives a function's arguments, they are
  its arguments' names (without the ``p_`` prefix), in order.
- README's layout names every Python module of the project, and nothing that does not exist.
  A module is every ``*.py`` file outside ``tests/`` (whose files are named after what they
  test, so the layout names the folder only), except ``__init__.py``, and outside what
  ``.gitignore`` ignores. It is named in the layout entry of its top-level folder (the line
  starting with ``api/``, ``db/``, ... and the indented lines under it), by its path relative
  to that folder (``routes/holds.py``) or, when no other module under that folder has its
  name, by its file name (``holds.py``). Every path an entry names exists, relative to its
  folder or to the root, and every file name under its folder or at the root; every top-level
  folder has an entry.
- Every repository path the documents name (README.md, CONTRIBUTING.md, docs/*.md,
  client/README.md) exists: a path starting with a top-level folder (``db/sql/50-ledger.sql``),
  a glob matching at least one file (``api/routes/*.py``), or a numbered file named by its
  number (``migrations/0019``, ``tests/sql/15``). Placeholders (``NNNN``) and what
  ``.gitignore`` ignores (``bench/results/``) are not paths to check. The paths are read from
  the text, so the test follows the files when they move: a document still naming the old
  place fails.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.errors import BAD_REQUEST_CODES, STATUS
from api.models import AMOUNT_CODES
from db.errors import CONSTRAINTS, RULES, Kind

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "client" / "README.md",
]


# ---------------------------------------------------------------------------------------------
# Reading Markdown
# ---------------------------------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """The text under ``## heading``, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row (a ``|`` inside backticks does not split)."""
    found, current, quoted = [], "", False
    for char in line.strip().removeprefix("|").removesuffix("|"):
        if char == "`":
            quoted = not quoted
        if char == "|" and not quoted:
            found.append(current.strip())
            current = ""
        else:
            current += char
    return [*found, current.strip()]


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line is ``header``."""
    lines = text.splitlines()
    assert header in lines, f"no table with the header {header!r}"
    rows = []
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    assert rows, f"the table {header!r} has no rows"
    return rows


def quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def gitignored(relative: Path) -> bool:
    """Whether .gitignore ignores ``relative`` (its patterns: names, or paths ending in /)."""
    for pattern in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines():
        pattern = pattern.strip().rstrip("/")
        if not pattern or pattern.startswith("#"):
            continue
        if "/" in pattern:
            if relative.as_posix() == pattern or relative.as_posix().startswith(pattern + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in relative.parts):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# The error table
# ---------------------------------------------------------------------------------------------


def answered_status(kind: Kind, code: str) -> int:
    """The HTTP status of a DomainError, as api/errors.py answers it."""
    return 400 if code in BAD_REQUEST_CODES else STATUS[kind]


_REFUSALS = {"DomainError", "error_response", "_refusal"}  # (kind or status, code, message)


def _string_constants(node: ast.expr) -> Iterator[str]:
    """The strings an expression can be: a constant, or one of a BoolOp's or IfExp's."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _string_constants(value)
    elif isinstance(node, ast.IfExp):
        yield from _string_constants(node.body)
        yield from _string_constants(node.orelse)


def refusal_codes() -> dict[str, set[int]]:
    """Every code a refusal of the Python layers names, with the statuses it is answered with
    where the call says (a ``DomainError``'s kind, an ``error_response``'s status)."""
    found: dict[str, set[int]] = {}
    for path in sorted([*(ROOT / "api").rglob("*.py"), *(ROOT / "db").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            code: ast.expr | None = None
            first: ast.expr | None = None
            if name in _REFUSALS and len(node.args) >= 2:
                first, code = node.args[0], node.args[1]
            if name in _REFUSALS | {"ApiError"}:
                code = next((k.value for k in node.keywords if k.arg == "code"), code)
            if code is None:
                continue
            for value in _string_constants(code):
                statuses = found.setdefault(value, set())
                if isinstance(first, ast.Constant) and isinstance(first.value, int):
                    statuses.add(first.value)
                elif isinstance(first, ast.Constant) and first.value in STATUS:
                    statuses.add(answered_status(first.value, value))
    return found


def answered_codes() -> dict[str, set[int]]:
    """Every error code Tollgate answers with, and its statuses (where known)."""
    found = refusal_codes()
    for kind, code in RULES.values():
        found.setdefault(code, set()).add(answered_status(kind, code))
    for kind, code, _ in CONSTRAINTS.values():
        found.setdefault(code, set()).add(answered_status(kind, code))
    for code in AMOUNT_CODES:  # pydantic's error types, answered 422 by the validation handler
        found.setdefault(code, set()).add(422)
    return found


def readme_error_table() -> list[tuple[list[str], set[int]]]:
    rows = table(README.read_text(encoding="utf-8"), "| code | status | meaning |")
    return [
        (quoted(code), {int(s) for s in re.findall(r"\d{3}", status)}) for code, status, _ in rows
    ]


def test_the_scan_finds_the_refusals_of_every_layer() -> None:
    found = refusal_codes()
    # api/deps.py, api/mcp_tools.py (a status), api/stripe_gateway.py, db/errors.py, db/queries.py
    for code in ("missing_api_key", "internal_error", "card_declined", "rule_violated"):
        assert code in found
    assert found["invalid_text"] == {422}
    assert found["idempotency_key_required"] == {400}  # a BAD_REQUEST_CODES one


def test_readme_error_table_names_every_code_answered() -> None:
    documented = {code for codes, _ in readme_error_table() for code in codes}
    missing = sorted(set(answered_codes()) - documented)
    assert missing == [], "add these codes to README's error table (| code | status | meaning |)"


def test_readme_error_table_names_only_codes_answered() -> None:
    documented = {code for codes, _ in readme_error_table() for code in codes}
    unknown = sorted(documented - set(answered_codes()))
    assert unknown == [], "README's error table names codes Tollgate never answers with"


def test_readme_error_table_gives_each_code_once_with_its_statuses() -> None:
    answered = answered_codes()
    seen: set[str] = set()
    wrong = []
    for codes, statuses in readme_error_table():
        assert statuses, f"the row of {codes} gives no status"
        for code in codes:
            assert code not in seen, f"{code} is in two rows of README's error table"
            seen.add(code)
            if not answered.get(code, set()) <= statuses:
                wrong.append(f"{code}: answered {sorted(answered[code])}, row says {statuses}")
    assert wrong == []


def test_architecture_sqlstate_table_lists_every_tg_sqlstate_with_its_status() -> None:
    text = section(ARCHITECTURE.read_text(encoding="utf-8"), "Errors")
    rows = {
        row[0]: row[2]
        for row in table(text, "| SQLSTATE | meaning | HTTP |")
        if re.fullmatch(r"TG\d{3}", row[0])
    }
    assert sorted(rows) == sorted(RULES), "docs/ARCHITECTURE.md's SQLSTATE table vs RULES"
    for sqlstate, http in rows.items():
        kind, code = RULES[sqlstate]
        assert int(http.split()[0]) == answered_status(kind, code), sqlstate


# ---------------------------------------------------------------------------------------------
# The SQL function table
# ---------------------------------------------------------------------------------------------


def executable_functions(db: psycopg.Connection[Any]) -> dict[str, list[list[str]]]:
    """Every function tollgate_app may execute in Tollgate's schemas: its qualified name, and
    the argument names of each of its overloads (without ``p_``)."""
    rows = db.execute(
        "SELECT n.nspname || '.' || p.proname, coalesce(p.proargnames, '{}'),"
        "       coalesce(p.proargmodes::text[], '{}')"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE pg_get_userbyid(n.nspowner) = 'tollgate_owner'"
        "   AND has_function_privilege('tollgate_app', p.oid, 'EXECUTE')"
    ).fetchall()
    found: dict[str, list[list[str]]] = {}
    for name, arg_names, modes in rows:
        inputs = [
            arg.removeprefix("p_")
            for i, arg in enumerate(arg_names)
            if not modes or modes[i] in ("i", "b", "v")
        ]
        found.setdefault(name, []).append(inputs)
    return found


def readme_function_table() -> dict[str, list[str] | None]:
    """The functions README's SQL table names, each with its argument names where given."""
    text = section(README.read_text(encoding="utf-8"), "For other services: SQL")
    named: dict[str, list[str] | None] = {}
    for row in table(text, "| function | what |"):
        for entry in quoted(row[0]):
            match = re.fullmatch(r"(\w+\.\w+)(?:\((.*)\))?", entry)
            assert match, f"not a function in README's SQL table: {entry}"
            args = match.group(2)
            named[match.group(1)] = (
                [arg.split()[0].removesuffix("[]") for arg in args.split(",") if arg.strip()]
                if args is not None
                else None
            )
    return named


def test_readme_sql_table_lists_exactly_what_the_service_role_may_execute(
    db: psycopg.Connection[Any],
) -> None:
    executable = executable_functions(db)
    assert "api.transfer_v1" in executable, "the query finds the service's functions"
    assert "api.ingest_stripe_event_v1" not in executable, "the query reads the grants"
    documented = readme_function_table()
    assert sorted(set(executable) - set(documented)) == [], "add these to README's SQL table"
    assert sorted(set(documented) - set(executable)) == [], (
        "README's SQL table names functions tollgate_app may not execute"
    )
    wrong = [
        f"{name}: README ({', '.join(args)}), the function {executable[name]}"
        for name, args in documented.items()
        if args is not None and args not in executable[name]
    ]
    assert wrong == [], "README's SQL table gives these functions other arguments"


# ---------------------------------------------------------------------------------------------
# The layout
# ---------------------------------------------------------------------------------------------


def layout_entries() -> dict[str, str]:
    """README's layout block: each top-level entry's text (its line and the indented ones)."""
    text = section(README.read_text(encoding="utf-8"), "Layout")
    block = re.search(r"^```\n(.*?)^```", text, re.M | re.S)
    assert block, "no code block in README's layout section"
    entries: dict[str, str] = {}
    current = None
    for line in block.group(1).splitlines():
        if line and not line[0].isspace():
            current, _, rest = line.partition(" ")
            entries[current] = rest
        elif current is not None:
            entries[current] += "\n" + line
    return entries


def top_folders() -> list[Path]:
    """The repository's top-level folders: not hidden, not ignored."""
    return sorted(
        p
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not gitignored(Path(p.name))
    )


def files_under(folder: Path, pattern: str) -> list[Path]:
    return [p for p in folder.rglob(pattern) if not gitignored(p.relative_to(ROOT))]


def python_modules() -> list[Path]:
    """Every module of the project (see the module docstring), relative to the root."""
    return sorted(
        path.relative_to(ROOT)
        for folder in top_folders()
        if folder.name != "tests"
        for path in files_under(folder, "*.py")
        if path.name != "__init__.py"
    )


def test_readme_layout_names_every_module() -> None:
    entries = layout_entries()
    assert len(python_modules()) > 40, "the walk finds the project's modules"
    assert Path("api/routes/holds.py") in python_modules()
    unnamed = []
    for module in python_modules():
        text = entries.get(module.parts[0] + "/", "")
        relative = module.relative_to(module.parts[0]).as_posix()
        unique = len(files_under(ROOT / module.parts[0], module.name)) == 1
        by_path = re.search(rf"(?<![\w/.-]){re.escape(relative)}(?![\w/])", text)
        by_name = re.search(rf"(?<![\w/.-]){re.escape(module.name)}(?![\w/])", text)
        if not (by_path or (unique and by_name)):
            unnamed.append(module.as_posix())
    assert unnamed == [], "name these modules in README's layout"


# A path (with a /, maybe a glob) or a file name in a layout entry.
_LAYOUT_TOKEN = re.compile(
    r"(?<![\w/.-])((?:[\w*-][\w.*-]*/)+[\w.*-]*"
    r"|[\w-]+\.(?:py|sql|md|toml|yml|json|png|Dockerfile))(?![\w/])"
)


def resolves(folder: Path, token: str) -> bool:
    """Whether a layout entry's token names something: a path relative to the entry's folder
    or to the root (a glob matching something), or a file name found under the folder or at
    the root."""
    if "/" not in token:
        return bool(files_under(folder, token)) or (ROOT / token).is_file()
    if "*" in token:
        return any(any(base.glob(token)) for base in (folder, ROOT))
    return any((base / token).exists() for base in (folder, ROOT))


def test_readme_layout_names_only_what_exists() -> None:
    entries = layout_entries()
    folders = [p.name + "/" for p in top_folders()]
    assert sorted(set(folders) - set(entries)) == [], "give these folders a layout entry"
    assert resolves(ROOT / "api", "routes/") and not resolves(ROOT / "api", "nowhere.py")
    missing = []
    for entry, text in entries.items():
        folder = ROOT / entry
        if not folder.is_dir():
            missing.append(entry)
            continue
        missing += [entry + t for t in _LAYOUT_TOKEN.findall(text) if not resolves(folder, t)]
    assert missing == [], "README's layout names what does not exist"


# ---------------------------------------------------------------------------------------------
# Paths named in the documents
# ---------------------------------------------------------------------------------------------


def named_paths(text: str) -> set[str]:
    """The repository paths a document names: those starting with a top-level folder."""
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")]
    pattern = rf"(?<![\w./-])((?:{'|'.join(map(re.escape, folders))})/[\w.*/-]*)"
    return {path.rstrip(".") for path in re.findall(pattern, text)}


def exists(path: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    target = ROOT / path
    if target.exists():
        return True
    # A numbered file named by its number: migrations/0019, tests/sql/15.
    return target.parent.is_dir() and any(
        child.name.startswith((target.name + ".", target.name + "-"))
        for child in target.parent.iterdir()
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paths_named_in_the_documents_exist(document: Path) -> None:
    paths = named_paths(document.read_text(encoding="utf-8"))
    checked = {p for p in paths if "NN" not in p and not gitignored(Path(p))}
    missing = sorted(p for p in checked if not exists(p))
    assert missing == [], f"{document.relative_to(ROOT)} names paths that do not exist"


def test_the_path_scan_reads_the_rule_table() -> None:
    paths = named_paths(section(ARCHITECTURE.read_text(encoding="utf-8"), "Where each rule lives"))
    assert {"db/sql/72-holds.sql", "api/models.py"} <= paths
    assert exists("migrations/0019") and exists("tests/sql/41")
    assert any(p.endswith(".sql") and p.startswith("db/") for p in paths)
    assert not exists("migrations/9999") and not exists("db/nowhere.sql")
