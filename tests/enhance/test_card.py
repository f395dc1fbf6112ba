import pytest

from l3se.card import (
    BUNDLED_MODEL_DIR,
    CARD_FILE,
    LINE_WIDTH,
    ModelCard,
    card_text,
    model_line,
    model_markdown,
    read_card,
    write_card,
)
from l3se.cli import main
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


def test_one_line_names_model_domain_and_warning(tmp_path, monkeypatch):
    line = card().one_line()
    assert line == ("tiny-test: trained on synthetic voices and generated noise. Warning: it "
                    "ignores its input; see `l3se card`")
    assert card(warning="").one_line() == ("tiny-test: trained on synthetic voices and generated "
                                           "noise; see `l3se card`")
    # Without the short fields: trained_on's first clause, the warning's first sentence.
    long = card(trained_on="2 h of TTS (three voices), noise; tiny models",
                warning="it ignores its input. It was trained for 20 steps.")
    assert long.one_line() == ("tiny-test: trained on 2 h of TTS, noise. Warning: it ignores "
                               "its input; see `l3se card`")
    short = card(domain="TTS", headline="useless")
    assert short.one_line() == "tiny-test: trained on TTS. Warning: useless; see `l3se card`"
    monkeypatch.chdir(tmp_path)
    write_card(card(), "m")
    assert model_line("m") == line.replace("`l3se card`", "`l3se card m`")


def test_one_line_fits_160_characters_and_keeps_the_warning_and_the_pointer():
    line = card(trained_on="synthetic voices " * 20, warning="it ignores its input " * 20,
                name="x" * 30).one_line("`l3se card runs/a/b`")
    assert len(line) == LINE_WIDTH and "\n" not in line
    assert line.startswith("x" * 30 + ": trained on synthetic voices")
    assert ". Warning: it ignores its input" in line and line.endswith("…; see `l3se card runs/a/b`")


def test_the_bundled_card_fits_one_line():
    from l3se.enhancer import DEFAULT_MODEL_DIR

    assert BUNDLED_MODEL_DIR == DEFAULT_MODEL_DIR
    line = model_line(BUNDLED_MODEL_DIR)
    assert len(line) <= LINE_WIDTH and line.endswith("; see `l3se card`")
    # Promoted by the rule: its headline is the domain warning, not a shortfall.
    assert "synthetic voices" in line and "may degrade real recordings" in line
    assert "below the noisy input" not in line


def test_markdown_shows_every_field(tmp_path):
    write_card(card(), tmp_path)
    line, text = model_markdown(tmp_path)
    assert line == card().one_line("the model card below")
    for part in ("tiny-test", "synthetic voices", "codec-1 20, lm 30", "it ignores its input"):
        assert part in text
    assert text.endswith(TABLE.strip())
    text = model_markdown(write_card(card(steps={}, measured=""), tmp_path).parent)[1]
    assert "Training steps" not in text and text.endswith("No measured results in this card.")


def test_card_text_aligns_and_turns_wide_tables():
    wide = "note\n\n| system | " + " | ".join(f"metric {i}" for i in range(20)) + " |\n" \
        + "|---" * 21 + "|\n| noisy | " + " | ".join("1.5" for _ in range(20)) + " |"
    text = card_text(card(measured=TABLE + "\n" + wide, warning="w " * 200), width=60)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 60
    assert "system    DNSMOS" in lines and "enhanced  1.59" in lines  # aligned, not turned
    assert "system     noisy" in lines and "metric 19  1.5" in lines  # turned
    assert lines[:4] == ["tiny-test", "", "trained on:  synthetic voices and generated noise",
                         "steps:       codec-1 20, lm 30"]


def test_card_command_prints_the_whole_card(tmp_path, capsys):
    assert main(["card"]) == 0
    out = capsys.readouterr().out
    bundled = read_card(BUNDLED_MODEL_DIR)
    assert out.startswith(f"model card of {BUNDLED_MODEL_DIR}\n\n{bundled.name}\n")
    steps = f"steps:       codec-1 {bundled.steps['codec-1']}"
    for part in ("trained on:", steps, "warning:", "measured:", "general STOI", "dfn3"):
        assert part in out
    assert max(map(len, out.splitlines())) <= 100
    write_card(card(), tmp_path / "m")
    assert main(["card", str(tmp_path / "m"), "--width", "60"]) == 0
    assert "tiny-test" in capsys.readouterr().out
    assert main(["card", str(tmp_path)]) == 2
    assert "has no model card" in capsys.readouterr().err
    assert main(["card", str(tmp_path / "typo")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["card", "--width", "10"]) == 2
    assert "--width must be at least 40" in capsys.readouterr().err


def test_missing_or_broken_cards_are_said_plainly(tmp_path):
    assert "no model card" in model_line(tmp_path)
    assert all("No model card" in text for text in model_markdown(tmp_path))
    (tmp_path / CARD_FILE).write_text("name: x\nsteps: {lm: 3}\n")
    with pytest.raises(ConfigError, match="trained_on"):
        read_card(tmp_path)
    assert "unreadable" in model_line(tmp_path) and "unreadable" in model_markdown(tmp_path)[0]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": " "}, "needs a name"),
    ({"steps": {"lm": -1}}, "whole numbers"),
    ({"steps": {"lm": 2.5}}, "whole numbers"),
    ({"warning": "", "headline": "useless"}, "give the warning too"),
])
def test_invalid_cards_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        card(**overrides)
