from dataclasses import dataclass, field

import pytest

from l3se.config import ConfigError, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class Cfg:
    name: str = "x"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)
    path: str | None = None


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run\noptim:\n  lr: 3.0e-4\n")
    cfg = load_config(Cfg, p, ["steps=5", "optim.betas=[0.8, 0.9]", "tags=[a, b]", "path=null"])
    assert cfg == Cfg(name="run", steps=5, optim=Optim(3e-4, (0.8, 0.9)), tags=["a", "b"])
    assert isinstance(cfg.optim.lr, float)


def test_unknown_key_is_named_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'"):
        load_config(Cfg, None, ["optim.lrr=1"])
    p = tmp_path / "c.yaml"
    p.write_text("stpes: 3\n")
    with pytest.raises(ConfigError, match="'stpes'.*'steps'"):
        load_config(Cfg, p)


def test_a_number_yaml_reads_as_a_string_is_taken_as_the_number(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 3e-4\n")
    assert load_config(Cfg, p).optim.lr == 3e-4
    assert load_config(Cfg, None, ["optim.lr=1e-3"]).optim.lr == 1e-3


def test_type_errors_and_bad_override():
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(Cfg, None, ["steps=abc"])
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got 'fast'"):
        load_config(Cfg, None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(Cfg, None, ["optim.lr=true"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Cfg, None, ["steps"])


def test_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["steps=7"])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Cfg, tmp_path / "out.yaml") == cfg



def test_a_file_states_only_what_it_changes_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nsteps: 3\noptim:\n  lr: 1.0e-3\n"
                                        "  betas: [0.5, 0.6]\ntags: [a, b]\n")
    (tmp_path / "mid.yaml").write_text("base: base.yaml\noptim:\n  lr: 2.0e-3\ntags: [c]\n")
    (tmp_path / "top.yaml").write_text("base: mid.yaml\nname: top\npath: null\n")
    cfg = load_config(Cfg, tmp_path / "top.yaml", ["steps=4"])
    # Sections merge key by key; lists and scalars are replaced; overrides come last.
    assert cfg == Cfg(name="top", steps=4, optim=Optim(2e-3, (0.5, 0.6)), tags=["c"])


def test_a_base_that_is_missing_or_circular_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="a.yaml: its base chain comes back to itself"):
        load_config(Cfg, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml \(base of .*c.yaml\)"):
        load_config(Cfg, tmp_path / "c.yaml")
