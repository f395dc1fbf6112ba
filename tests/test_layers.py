"""Imports go one way:
data_sim <- config, card <- models <- decoding <- enhancer <- enhance_corpus, training <- recipes
<- CLI, with evaluation beside them all (it scores outputs and must not depend on the models it
judges) and diagnostics reading the enhancer and the evaluation's manifests."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source files (globs under the repository root) -> module prefixes they must not import.
TOP = ("recipes", "l3se.cli")
INFERENCE = ("l3se.decoding", "l3se.enhancer", "l3se.enhance_corpus", "l3se.diagnostics")
RULES = {
    "data_sim/**/*.py": ("l3se", "recipes"),
    "l3se/config.py": (*TOP, "l3se.console"),
    "l3se/console.py": (*TOP, "l3se.models", "l3se.training", "l3se.evaluation", *INFERENCE),
    "l3se/card.py": (*TOP, "l3se.models", "l3se.training", "l3se.evaluation", *INFERENCE),
    "l3se/training/**/*.py": TOP,
    "l3se/models/**/*.py": (*TOP, "l3se.training", "l3se.evaluation", "l3se.card", *INFERENCE),
    "l3se/decoding.py": (*TOP, "l3se.training", "l3se.evaluation", "l3se.card",
                         *INFERENCE[1:]),
    "l3se/enhancer.py": (*TOP, "l3se.training", "l3se.evaluation", *INFERENCE[2:]),
    "l3se/enhance_corpus.py": (*TOP, "l3se.training", "l3se.evaluation", "l3se.diagnostics"),
    "l3se/diagnostics.py": (*TOP, "l3se.training", "l3se.enhance_corpus"),
    "l3se/evaluation/**/*.py": (*TOP, "l3se.models", "l3se.training", "l3se.card", *INFERENCE),
    "recipes/**/*.py": ("l3se.cli",),
}
# The command line sits on top of everything; the package entry points only start it.
UNRULED = ("l3se/cli/*.py", "l3se/__init__.py", "l3se/__main__.py")


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


def test_every_l3se_module_has_a_rule():
    ruled = {p for pattern in (*RULES, *UNRULED) for p in ROOT.glob(pattern)}
    loose = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("l3se/**/*.py") if p not in ruled)
    assert not loose, f"add a rule for {loose}"


def test_imported_modules_sees_nested_and_relative_imports(tmp_path):
    source = tmp_path / "pkg" / "sub" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from l3se.cli import main\n\nfrom ..other import x\n")
    found = imported_modules(source, tmp_path)
    assert found == {"l3se.cli", "l3se.cli.main", "pkg.other", "pkg.other.x"}
