"""The model card: what a model directory's user must know before trusting its output.

``card.yaml`` beside ``enhancer.yaml`` holds a ``ModelCard``. ``l3se enhance`` prints
``model_line`` (one short line) before it enhances, ``l3se card`` prints ``card_text`` (all of
it), and the app shows both (``model_markdown``), so that a model trained on a toy domain, or one
known not to work, says so where it is used without burying the user's own output.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from l3se.config import ConfigError, load_config, save_config

CARD_FILE = "card.yaml"
# l3se.enhancer.DEFAULT_MODEL_DIR, named here so that reading a card never imports torch.
BUNDLED_MODEL_DIR = Path(__file__).parent / "pretrained" / "default"
# A one-line display is read at a glance before the output a user asked for, not studied.
LINE_WIDTH = 160
# The fewest characters a clipped part of such a line keeps, however long the rest.
MIN_CLIP = 20


@dataclass
class ModelCard:
    name: str
    # The training domain in plain words: the speech, noise and rooms, and how long it trained.
    trained_on: str
    # Training steps per stage, in stage order (codec-1, codec-2, s2t, distill, lm).
    steps: dict[str, int] = field(default_factory=dict)
    # The evaluation table as measured, markdown.
    measured: str = ""
    # What the model cannot do that a user would otherwise assume; empty when nothing is known.
    warning: str = ""
    # The training domain in a few words, for one-line displays (empty: trained_on's first
    # clause, without its parentheses).
    domain: str = ""
    # The warning in a few words, for one-line displays (empty: the warning's first sentence).
    headline: str = ""

    def __post_init__(self):
        if not self.name.strip() or not self.trained_on.strip():
            raise ValueError("a model card needs a name and what it was trained on (trained_on)")
        bad = {k: v for k, v in self.steps.items()
               if isinstance(v, bool) or not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"steps must be whole numbers >= 0, got {bad}")
        if self.headline.strip() and not self.warning.strip():
            raise ValueError("a headline summarises the warning: give the warning too")

    def short_domain(self) -> str:
        if self.domain.strip():
            return _one_line(self.domain)
        return _one_line(re.sub(r"\s*\([^)]*\)", "", self.trained_on).split(";")[0]).rstrip(" ,.")

    def short_warning(self) -> str:
        if self.headline.strip():
            return _one_line(self.headline)
        return re.split(r"(?<=\.)\s", _one_line(self.warning))[0].rstrip(".")

    def one_line(self, more: str = "`l3se card`", width: int = LINE_WIDTH) -> str:
        """Name, training domain and the warning's headline in at most ``width`` characters,
        ending with where the rest is (``more``)."""
        head, tail = f"{self.name}: trained on ", f"; see {more}"
        warning = f". Warning: {self.short_warning()}" if self.warning.strip() else ""
        # The domain gives way first: the warning is what the line is for.
        room = max(width - len(head) - len(warning) - len(tail), MIN_CLIP)
        return _fit(head + _clip(self.short_domain(), room) + warning, tail, width)

    def markdown(self) -> str:
        """Every field, the measured table last."""
        parts = [f"**Model:** {self.name}", f"**Trained on:** {self.trained_on}"]
        if self.steps:
            parts.append(f"**Training steps:** {self.steps_text()}")
        if self.warning:
            parts.append(f"**Warning:** {self.warning}")
        parts.append(self.measured.strip() or "No measured results in this card.")
        return "\n\n".join(parts)

    def steps_text(self) -> str:
        return ", ".join(f"{stage} {n}" for stage, n in self.steps.items())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, width: int) -> str:
    text = _one_line(text)
    return text if len(text) <= width else text[:width - 1].rstrip(" ,;.") + "…"


def _fit(text: str, tail: str, width: int) -> str:
    """``text + tail`` on one line of at most ``width`` characters, cutting ``text`` (never the
    tail, which says where the rest is) when it must; a tail too long to leave ``text``
    MIN_CLIP characters is kept whole and the line runs over."""
    return _clip(text, max(width - len(tail), MIN_CLIP)) + tail


def write_card(card: ModelCard, model_dir: str | Path) -> Path:
    path = Path(model_dir) / CARD_FILE
    save_config(card, path)
    return path


def read_card(model_dir: str | Path) -> ModelCard | None:
    """The card of a model directory; None when it has none, a ConfigError when it is malformed."""
    path = Path(model_dir) / CARD_FILE
    return load_config(ModelCard, path) if path.is_file() else None


def card_command(model_dir: str | Path) -> str:
    """The command that prints the card of ``model_dir``."""
    bundled = Path(model_dir).resolve() == BUNDLED_MODEL_DIR.resolve()
    return "l3se card" if bundled else f"l3se card {model_dir}"


def model_line(model_dir: str | Path, width: int = LINE_WIDTH) -> str:
    """One line of at most ``width`` characters saying what the model in ``model_dir`` is, or
    that nothing says so."""
    try:
        card = read_card(model_dir)
    except ConfigError as e:
        return _fit(f"model {model_dir}: its card is unreadable ({e})", "", width)
    if card is None:
        return _fit(f"model {model_dir}: no model card, so its training data and quality are "
                    "unknown", "", width)
    return card.one_line(f"`{card_command(model_dir)}`", width)


def card_text(card: ModelCard, width: int = 100) -> str:
    """The whole card for a terminal: fields wrapped to ``width``, the measured table's columns
    aligned (a markdown table's rows are wider than any terminal once wrapped)."""
    label = "{:<13}".format
    lines = [card.name, ""]
    fields = [("trained on", card.trained_on), ("steps", card.steps_text()),
              ("warning", card.warning)]
    for name, value in fields:
        if value.strip():
            lines += textwrap.wrap(_one_line(value), width, initial_indent=label(name + ":"),
                                   subsequent_indent=label(""))
    if card.measured.strip():
        lines += ["", "measured:", _align_tables(card.measured.strip(), width)]
    return "\n".join(lines)


def _aligned(rows: list[list[str]]) -> list[str]:
    sizes = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return ["  ".join(cell.ljust(sizes[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _align_tables(markdown: str, width: int) -> str:
    """Markdown with each pipe table's columns padded to one width and its prose wrapped. A table
    wider than ``width`` is transposed when that narrows it: an evaluation table has a few systems
    and many metric columns."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush():
        if table:
            lines = _aligned(table)
            if max(map(len, lines)) > width and len({len(row) for row in table}) == 1:
                turned = _aligned([list(col) for col in zip(*table, strict=True)])
                lines = min(lines, turned, key=lambda t: max(map(len, t)))
            out.extend(lines)
            table.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(c and set(c) <= set("-:") for c in cells):  # the header's separator row
                table.append(cells)
            continue
        flush()
        out.extend(textwrap.wrap(stripped, width) or [""])
    flush()
    return "\n".join(out)


def model_markdown(model_dir: str | Path) -> tuple[str, str]:
    """What the app shows of the model in ``model_dir``: (one line, for above the Enhance button;
    the whole card with its measured table, for a collapsible panel). Without a readable card
    both say why."""
    try:
        card = read_card(model_dir)
    except ConfigError as e:
        text = f"The model card of `{model_dir}` is unreadable: {e}"
        return text, text
    if card is None:
        text = f"**No model card** in `{model_dir}`: its training data and quality are unknown."
        return text, text
    return card.one_line("the model card below"), card.markdown()
