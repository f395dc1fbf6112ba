"""The README stays honest: every command in its code blocks (and the docs') parses, and its
links (and the docs') resolve. A renamed flag or a moved page fails here instead of in a newcomer's
terminal.

A command is parsed by the parser it would run, and nothing else runs: ``l3se ...`` by
``l3se.cli.build_parser``, ``python SCRIPT ...`` by executing the script until its
``ArgumentParser.parse_args`` returns, ``torchrun ...`` by torchrun's own parser and then its
script's, ``python -m pytest ...`` by pytest collecting this file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from l3se.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETUP = "bash scripts/setup.sh"
TEST_COMMAND = f"{SETUP} && .venv/bin/python -m pytest"
MAIN_COMMAND = f"{SETUP} && .venv/bin/l3se recipe quickstart"
PROGRAMS = ("l3se", "python", "python3", "torchrun")


class Parsed(Exception):
    """Raised in place of running a script once its arguments have parsed."""


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)


def commands(markdown: str) -> list[list[str]]:
    """The l3se, python and torchrun commands of a markdown text's code blocks, as argv lists:
    continuation lines joined, comments dropped, `&&` / `;` / `|` chains split."""
    found = []
    for block in code_blocks(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            # Blocks also hold diagrams and file trees, whose quotes are not shell quotes.
            if not any(Path(word).name in PROGRAMS for word in line.split()):
                continue
            words = shlex.split(line, comments=True)
            chain: list[str] = []
            for word in [*words, "&&"]:
                if word not in ("&&", "||", ";", "|"):
                    chain.append(word)
                    continue
                if chain and Path(chain[0]).name in PROGRAMS:
                    found.append(chain)
                chain = []
    return found


def _error_line(output: str, status) -> str:
    """argparse's error line out of what a failed parse printed (usage first, notes after)."""
    lines = output.strip().splitlines()
    return next((line for line in lines if "error:" in line), f"exit status {status}")


def _parse(parser: argparse.ArgumentParser, args: list[str]):
    """(why ``args`` do not parse or None, the namespace or None)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return None, parser.parse_args(args)
    except SystemExit as e:
        if e.code == 0:  # --help, --version
            return None, None
        return _error_line(err.getvalue(), e.code), None


def _l3se_error(args: list[str]) -> str | None:
    error, ns = _parse(build_parser(), args)
    if error is None and ns is not None and not hasattr(ns, "func"):
        return "names no subcommand: l3se would only print its help"
    return error


def _script_error(script: Path, args: list[str]) -> str | None:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    err = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), \
            mock.patch.object(sys, "argv", [str(script), *args]), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except Parsed:
            return None
        except SystemExit as e:
            if e.code == 0:
                return None
            return _error_line(err.getvalue(), e.code)
    return "the script never parsed its arguments"


def _pytest_error(args: list[str]) -> str | None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "--noconftest",
         "-p", "no:cacheprovider", __file__],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode in (0, 5):  # 5: the arguments deselected every test here
        return None
    return _error_line(proc.stderr, proc.returncode)


def parse_error(argv: list[str]) -> str | None:
    """Why ``argv`` would not parse, or None when it would; the command's work never runs."""
    return _parse_error(tuple(argv))


@functools.cache  # the pages repeat commands, and each script check imports its script anew
def _parse_error(command: tuple[str, ...]) -> str | None:
    argv = list(command)
    name = Path(argv[0]).name
    if name == "torchrun":
        from torch.distributed.run import get_args_parser

        error, ns = _parse(get_args_parser(), argv[1:])
        if error is not None or ns is None:
            return error
        name, argv = "python", ["python", *(["-m"] if ns.module else []), ns.training_script,
                                *ns.training_script_args]
    if name == "l3se":
        return _l3se_error(argv[1:])
    if name not in ("python", "python3") or len(argv) < 2:
        return "not a command this test can parse"
    if argv[1] == "-m":
        module, args = argv[2], argv[3:]
        if module == "l3se":
            return _l3se_error(args)
        if module == "pytest":
            return _pytest_error(args)
        return f"python -m {module}: not a module this test can parse"
    script = ROOT / argv[1]
    if not script.is_file():
        return f"{argv[1]}: no such script"
    return _script_error(script, argv[2:])


def command_errors(markdown: str) -> list[str]:
    return [f"{shlex.join(argv)}: {error}" for argv in commands(markdown)
            if (error := parse_error(argv)) is not None]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def link_errors(path: Path) -> list[str]:
    """Relative links of a markdown file whose file, or heading, does not exist."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    errors = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            errors.append(f"{path.name}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            errors.append(f"{path.name}: {target}: no such heading")
    return errors


def test_readme_commands_parse():
    found = commands(README.read_text())
    # The extraction itself must not come back empty-handed.
    assert {Path(argv[0]).name for argv in found} >= {"l3se", "python", "torchrun"}
    assert len(found) >= 10
    assert command_errors(README.read_text()) == []


def test_docs_commands_parse():
    assert [e for page in sorted(DOCS.glob("*.md")) for e in command_errors(page.read_text())] == []


@pytest.mark.parametrize(("command", "message"), [
    ("l3se enhance a.wav b.wav --no-such-flag", "unrecognized arguments: --no-such-flag"),
    ("l3se -v", "names no subcommand"),
    ("l3se recipe", "arguments are required"),
    ("l3se train lm --config tiny --stop-at soon", "invalid int value: 'soon'"),
    ("python -m l3se card --width", "expected one argument"),
    (".venv/bin/python app.py --port 7860 --no-such-flag", "unrecognized arguments"),
    ("python benchmarks/bench_decode.py --quick --sizes huge", "invalid choice: 'huge'"),
    ("python benchmarks/no_such_bench.py", "no such script"),
    ("torchrun --no-such-flag 8 -m l3se enhance a b", "unrecognized arguments"),
    ("torchrun --nproc-per-node 8 -m l3se enhance a b --no-such-flag", "unrecognized arguments"),
    ("torchrun --nproc_per_node 8 recipes/train_lm.py lm --no-such-flag", "unrecognized"),
    ("python -m pytest --no-such-flag", "unrecognized arguments: --no-such-flag"),
])
def test_a_bad_command_is_caught(command, message):
    assert message in parse_error(shlex.split(command))


def test_a_readme_with_a_bad_flag_fails():
    bad = README.read_text().replace("enhance noisy.wav enhanced.wav",
                                      "enhance noisy.wav enhanced.wav --denoise-harder", 1)
    assert bad != README.read_text()
    errors = command_errors(bad)
    assert len(errors) == 1 and "--denoise-harder" in errors[0]


def test_commands_are_found_in_chains_and_continuations():
    text = ("```bash\nbash scripts/setup.sh && .venv/bin/l3se card  # a comment\n"
            "l3se enhance a.wav \\\n    b.wav --quiet\necho l3se\n```\n")
    assert commands(text) == [[".venv/bin/l3se", "card"],
                              ["l3se", "enhance", "a.wav", "b.wav", "--quiet"]]


def test_readme_keeps_the_ci_and_main_commands_and_stays_short():
    text = README.read_text()
    assert TEST_COMMAND in text and MAIN_COMMAND in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    assert len(text.splitlines()) < 200


def test_links_resolve_and_every_doc_is_linked_from_the_readme():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert [e for page in pages for e in link_errors(page)] == []
    linked = set(re.findall(r"\]\(docs/([^)#\s]+)", README.read_text()))
    assert {p.name for p in DOCS.glob("*.md")} <= linked


def test_link_check_catches_missing_pages_and_headings(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n[x](b.md) [y](#top) [z](#nowhere) [w](a.md#top)\n"
                                   "[web](https://example.org)\n```\n# not a heading\n```\n")
    assert link_errors(tmp_path / "a.md") == ["a.md: b.md: no such file",
                                              "a.md: #nowhere: no such heading"]
    assert slug("Data simulation (`data_sim`)") == "data-simulation-data_sim"
