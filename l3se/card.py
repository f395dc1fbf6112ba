"""The model card: what a model directory's user must know before trusting its output.

``card.yaml`` beside ``enhancer.yaml`` holds a ``ModelCard``. ``l3se enhance`` logs
``model_line`` before it enhances and the app shows ``model_markdown`` under its model box, so
that a model trained on a toy domain, or one known not to work, says so where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from l3se.config import ConfigError, load_config, save_config

CARD_FILE = "card.yaml"


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

    def __post_init__(self):
        if not self.name.strip() or not self.trained_on.strip():
            raise ValueError("a model card needs a name and what it was trained on (trained_on)")
        bad = {k: v for k, v in self.steps.items()
               if isinstance(v, bool) or not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"steps must be whole numbers >= 0, got {bad}")

    def one_line(self) -> str:
        """Name, training domain and warning on one line."""
        line = f"model {self.name}: trained on {self.trained_on}"
        if self.warning:
            line += f" WARNING: {self.warning}"
        return " ".join(line.split())

    def markdown(self) -> str:
        """Every field but the measured table, which needs a page's full width."""
        parts = [f"**Model:** {self.name}", f"**Trained on:** {self.trained_on}"]
        if self.steps:
            steps = ", ".join(f"{stage} {n}" for stage, n in self.steps.items())
            parts.append(f"**Training steps:** {steps}")
        if self.warning:
            parts.append(f"**Warning:** {self.warning}")
        return "\n\n".join(parts)


def write_card(card: ModelCard, model_dir: str | Path) -> Path:
    path = Path(model_dir) / CARD_FILE
    save_config(card, path)
    return path


def read_card(model_dir: str | Path) -> ModelCard | None:
    """The card of a model directory; None when it has none, a ConfigError when it is malformed."""
    path = Path(model_dir) / CARD_FILE
    return load_config(ModelCard, path) if path.is_file() else None


def model_line(model_dir: str | Path) -> str:
    """One line saying what the model in ``model_dir`` is, or that nothing says so."""
    try:
        card = read_card(model_dir)
    except ConfigError as e:
        return f"model {model_dir}: its card is unreadable ({e})"
    if card is None:
        return f"model {model_dir}: no model card (training data and quality unknown)"
    return f"{card.one_line()} ({model_dir})"


def model_markdown(model_dir: str | Path) -> tuple[str, str]:
    """What the app shows of the model in ``model_dir``: (the card, or why there is none; the
    card's measured table, or a line saying there is none)."""
    none = "No measured results in a model card."
    try:
        card = read_card(model_dir)
    except ConfigError as e:
        return f"The model card of `{model_dir}` is unreadable: {e}", none
    if card is None:
        return (f"**No model card** in `{model_dir}`: its training data and quality are unknown.",
                none)
    return card.markdown(), card.measured.strip() or none
