"""Imports go one way: data_sim <- models, training, config <- recipes <- CLI."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source files (globs under the repository root) -> module prefixes they must not import.
RULES = {
    "data_sim/**/*.py": ("l3se", "recipes"),
    "l3se/config.py": ("recipes", "l3se.cli"),
    "l3se/training/**/*.py": ("recipes", "l3se.cli"),
    "l3se/models/**/*.py": ("recipes", "l3se.cli"),
    "recipes/**/*.py": ("l3se.cli",),
}


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an import statement in ``path`` (under ``root``) names, function-level
    imports included; ``from a import b`` counts as both ``a`` and ``a.b``."""
    package = path.relative_to(root).parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


@pytest.mark.parametrize("pattern", list(RULES))
def test_layers(pattern):
    files = sorted(ROOT.glob(pattern))
    assert files, pattern
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if forbidden(module, RULES[pattern])
    ]
    assert not bad, "\n".join(bad)


def test_imported_modules_sees_nested_and_relative_imports(tmp_path):
    source = tmp_path / "pkg" / "sub" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from l3se.cli import main\n\nfrom ..other import x\n")
    found = imported_modules(source, tmp_path)
    assert found == {"l3se.cli", "l3se.cli.main", "pkg.other", "pkg.other.x"}
