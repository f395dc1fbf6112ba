import dataclasses
import subprocess
import sys

import pytest

from data_sim.dataset import DataConfig
from l3se.config import ConfigError, load_config
from l3se.training.options import RecipeConfig
from recipes.stages import CONFIGS, STAGES, resolve_config, upstream_model


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_is_complete(name):
    stage = STAGES[name]
    assert issubclass(stage.config_class, RecipeConfig)
    assert callable(stage.recipe.build_task)
    fields = {f.name for f in dataclasses.fields(stage.config_class)}
    assert set(stage.upstream) <= fields
    # An upstream stage runs earlier.
    order = list(STAGES)
    assert all(order.index(s) < order.index(name) for s in stage.upstream.values())
    for scale in ("tiny", "paper"):
        cfg = load_config(stage.config_class, resolve_config(stage.folder, scale))
        assert isinstance(cfg.train.max_steps, int)


def test_listing_the_stages_imports_no_recipe():
    code = ("import sys; from l3se.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith(('recipes.train', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_shipped_data_configs_load(scale):
    cfg = load_config(DataConfig, resolve_config("data", scale))
    assert cfg.mix.sample_rate == 16000 and cfg.mix.p_reverb == 0.5


def test_resolve_config_names_and_paths(tmp_path):
    assert resolve_config("lm", "tiny") == CONFIGS / "lm" / "tiny.yaml"
    with pytest.raises(ConfigError, match="no config named 'huge' in recipes/configs/data; "
                                          "available: paper, tiny"):
        resolve_config("data", "huge")
    own = tmp_path / "mine.yaml"
    own.write_text("seed: 3\n")
    assert resolve_config("data", str(own)) == own
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config("data", str(tmp_path / "missing.yaml"))


def test_upstream_model_names_the_stage_to_run(tmp_path):
    cfg = STAGES["lm"].config_class(codec=str(tmp_path))
    assert upstream_model("lm", cfg, "codec") == tmp_path
    cfg.ni_encoder = str(tmp_path / "nope")
    message = (f"ni_encoder: {tmp_path / 'nope'} does not exist (it is distill's exported model: "
               "run `l3se train distill` first or point ni_encoder at it)")
    with pytest.raises(ConfigError) as e:
        upstream_model("lm", cfg, "ni_encoder")
    assert str(e.value) == message
