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


def test_type_errors_and_bad_override():
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(Cfg, None, ["steps=abc"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Cfg, None, ["steps"])


def test_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["steps=7"])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Cfg, tmp_path / "out.yaml") == cfg

