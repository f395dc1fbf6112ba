import pytest

from l3se.card import CARD_FILE, ModelCard, model_line, model_markdown, read_card, write_card
from l3se.config import ConfigError

TABLE = "| system | DNSMOS |\n|---|---|\n| noisy | 1.54 |\n| enhanced | 1.59 |\n"


def card(**overrides) -> ModelCard:
    fields = dict(name="tiny-test", trained_on="synthetic voices\nand generated noise",
                  steps={"codec-1": 20, "lm": 30}, measured=TABLE, warning="it ignores its input")
    return ModelCard(**{**fields, **overrides})


def test_round_trip_keeps_fields_and_stage_order(tmp_path):
    written = card(steps={"lm": 3, "codec-1": 1, "distill": 2})
    assert write_card(written, tmp_path) == tmp_path / CARD_FILE
    read = read_card(tmp_path)
    assert read == written and list(read.steps) == ["lm", "codec-1", "distill"]
    assert read_card(tmp_path / "elsewhere") is None


def test_one_line_names_model_domain_and_warning(tmp_path):
    line = card().one_line()
    assert line == ("model tiny-test: trained on synthetic voices and generated noise "
                    "WARNING: it ignores its input")
    assert "WARNING" not in card(warning="").one_line()
    write_card(card(), tmp_path)
    assert model_line(tmp_path) == f"{line} ({tmp_path})"
    assert "\n" not in model_line(tmp_path)


def test_markdown_shows_every_field(tmp_path):
    write_card(card(), tmp_path)
    text, measured = model_markdown(tmp_path)
    for part in ("tiny-test", "synthetic voices", "codec-1 20, lm 30", "it ignores its input"):
        assert part in text
    assert measured == TABLE.strip()
    text, measured = model_markdown(write_card(card(steps={}, measured=""), tmp_path).parent)
    assert "Training steps" not in text and measured == "No measured results in a model card."


def test_missing_or_broken_cards_are_said_plainly(tmp_path):
    assert "no model card" in model_line(tmp_path)
    assert "No model card" in model_markdown(tmp_path)[0]
    (tmp_path / CARD_FILE).write_text("name: x\nsteps: {lm: 3}\n")
    with pytest.raises(ConfigError, match="trained_on"):
        read_card(tmp_path)
    assert "unreadable" in model_line(tmp_path) and "unreadable" in model_markdown(tmp_path)[0]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": " "}, "needs a name"),
    ({"steps": {"lm": -1}}, "whole numbers"),
    ({"steps": {"lm": 2.5}}, "whole numbers"),
])
def test_invalid_cards_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        card(**overrides)
