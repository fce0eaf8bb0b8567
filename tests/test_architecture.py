"""Who may import whom (ARCHITECTURE.md §3), checked by walking the ``ast`` of every module.

The repository grows while this test exists: it checks whatever files are there.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("netdicom2", "conformance", "fuzz", "pcaps", "reports")
# The harness lives in top-level folders of the repository and is installed, and imported, as
# subpackages of netdicom2 (netdicom2/<name> is a link to ../<name>; pyproject.toml).
HARNESS = frozenset({"conformance", "fuzz", "pcaps", "reports"})

# Modules of netdicom2 that may do I/O or threading: the adapters (the threaded provider, the
# one-loop server and their shared socket plumbing), the CLI and the example applications.
# Everything else is the sans-I/O library.
IO_MODULES = frozenset({"socket", "selectors", "threading", "queue", "time"})
IO_ALLOWED = (
    "dulprovider.py",
    "dultransport.py",
    "dulserver.py",
    "transport.py",
    "cli.py",
    "cli_*.py",
    "cli/*.py",
    "app_*.py",
)

# The conformance oracle is the shared CSV or an independent transcription, never the table
# under test (a table must not be checked against itself).
FORBIDDEN_IN_CONFORMANCE = frozenset({"TRANSITIONS", "NEXT_STATE"})


@dataclass(frozen=True)
class Import:
    """One imported module (absolute name) and the names taken from it, with where it is."""

    path: Path
    line: int
    module: str
    names: tuple[str, ...]


def _python_files(package: str) -> list[Path]:
    """Every .py file under a top-level package (none if it does not exist yet)."""
    base = ROOT / package
    return sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    """The dotted module name of a file under ROOT (a package's __init__ is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[Import]:
    """Every import statement of a file, relative ones resolved to absolute names."""
    return _imports_of_source(path, path.read_text(encoding="utf-8"))


def _imports_of_source(path: Path, source: str) -> Iterator[Import]:
    """Every import statement of ``source`` (the text of ``path``), resolved to absolute names."""
    tree = ast.parse(source, filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield Import(path, node.lineno, module, names)


def _top(module: str) -> str:
    """The component a module belongs to: a harness package, or its top-level package."""
    parts = module.split(".")
    if parts[0] == "netdicom2" and len(parts) > 1 and parts[1] in HARNESS:
        return parts[1]
    return parts[0]


def _where(imp: Import) -> str:
    """file:line of an import, for failure messages."""
    return f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.module} {imp.names or ''}"


ALL_FILES = [p for pkg in PACKAGES for p in _python_files(pkg)]


def test_there_is_something_to_check() -> None:
    assert any(p.name == "fsm.py" for p in ALL_FILES)


def test_netdicom2_imports_only_the_standard_library_and_itself() -> None:
    bad = [
        _where(imp)
        for path in _python_files("netdicom2")
        for imp in _imports(path)
        if _top(imp.module) not in sys.stdlib_module_names and _top(imp.module) != "netdicom2"
    ]
    assert bad == []


def test_netdicom2_never_imports_the_harness() -> None:
    bad = [
        _where(imp)
        for path in _python_files("netdicom2")
        for imp in _imports(path)
        if _top(imp.module) in HARNESS
    ]
    assert bad == []


def test_the_harness_is_imported_only_under_the_netdicom2_namespace() -> None:
    # `import conformance` works in a checkout but not in the installed wheel, where the harness
    # exists only as netdicom2.conformance, netdicom2.fuzz, ... (relative imports resolve to
    # the folder's name here, so the harness uses absolute imports).
    files = [*ALL_FILES, *sorted((ROOT / "tests").rglob("*.py")), *ROOT.glob("benchmarks/*.py")]
    bad = [
        _where(imp)
        for path in files
        for imp in _imports(path)
        if imp.module.split(".")[0] in HARNESS
    ]
    assert bad == []


def test_the_harness_links_point_at_the_top_level_folders() -> None:
    for name in HARNESS:
        link = ROOT / "netdicom2" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), link


def _io_allowed(path: Path) -> bool:
    """Whether a netdicom2 module is on the I/O allow-list."""
    relative = path.relative_to(ROOT / "netdicom2")
    return any(relative.match(pattern) for pattern in IO_ALLOWED)


def test_only_the_adapter_and_cli_do_io() -> None:
    bad = [
        _where(imp)
        for path in _python_files("netdicom2")
        if not _io_allowed(path)
        for imp in _imports(path)
        if _top(imp.module) in IO_MODULES
    ]
    assert bad == []


def test_io_allow_list_matches_the_intended_modules() -> None:
    netdicom2 = ROOT / "netdicom2"
    assert _io_allowed(netdicom2 / "dulprovider.py")
    assert _io_allowed(netdicom2 / "dultransport.py")
    assert _io_allowed(netdicom2 / "cli_harness.py")
    assert _io_allowed(netdicom2 / "app_scp.py")
    assert _io_allowed(netdicom2 / "dulserver.py")
    assert _io_allowed(netdicom2 / "transport.py")
    assert not _io_allowed(netdicom2 / "connection.py")
    assert not _io_allowed(netdicom2 / "fsm.py")


def test_fsm_imports_nothing_from_the_package() -> None:
    imports = list(_imports(ROOT / "netdicom2" / "fsm.py"))
    assert [_where(i) for i in imports if _top(i.module) == "netdicom2"] == []
    assert all(_top(i.module) in sys.stdlib_module_names for i in imports)


def test_scapy_only_in_pcaps_and_tests() -> None:
    bad = [
        _where(imp)
        for path in ALL_FILES
        if path.relative_to(ROOT).parts[0] != "pcaps"
        for imp in _imports(path)
        if _top(imp.module) == "scapy"
    ]
    assert bad == []


def test_conformance_does_not_use_the_table_under_test() -> None:
    bad = []
    for path in _python_files("conformance"):
        for imp in _imports(path):
            if _top(imp.module) == "netdicom2" and FORBIDDEN_IN_CONFORMANCE & set(imp.names):
                bad.append(_where(imp))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_IN_CONFORMANCE:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
    assert bad == []


def test_the_walker_resolves_relative_imports() -> None:
    # A sanity check of the walker itself, on a synthetic module inside the package tree.
    assert _module_name(ROOT / "netdicom2" / "__init__.py") == "netdicom2"
    assert _module_name(ROOT / "netdicom2" / "fsm.py") == "netdicom2.fsm"
    source = "from . import fsm\nfrom .pdu import decode\nfrom ..conformance import x\n"
    got = [(i.module, i.names) for i in _imports_of_source(ROOT / "netdicom2" / "m.py", source)]
    assert got == [
        ("netdicom2", ("fsm",)),
        ("netdicom2.pdu", ("decode",)),
        ("conformance", ("x",)),
    ]
