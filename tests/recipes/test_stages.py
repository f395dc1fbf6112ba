import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data_sim.dataset import DataConfig
from l3se.config import ConfigError, load_config
from l3se.models.codec import WavCodec
from l3se.models.weights import WEIGHTS_FILE
from l3se.training.options import RecipeConfig
from recipes.stages import (
    CONFIGS,
    STAGES,
    check_launch,
    load_upstream,
    resolve_config,
    upstream_model,
)
from tests.models.tiny import tiny_codec_config

ROOT = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = [
    (name, path.stem)
    for name, stage in STAGES.items()
    for path in sorted((CONFIGS / stage.folder).glob("paper*.yaml"))
]


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
    # A later stage can be built from an upstream stage's task (launch checks, benchmarks).
    assert all(STAGES[s].exported for s in stage.upstream.values())
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


@pytest.mark.parametrize(("name", "config"), PAPER_CONFIGS)
def test_every_paper_config_launches_on_1_2_4_and_8_processes(name, config):
    # Table 1's batches are per GPU: 20 and 6 must run on 8 GPUs (global 160 and 48).
    report = check_launch(name, config, world_sizes=[1, 2, 4, 8])
    print(report)
    train = load_config(STAGES[name].config_class, resolve_config(STAGES[name].folder, config)).train
    for world in (1, 2, 4, 8):
        batch = train.batch_size * world * train.grad_accum
        assert (f"on {world}: batch: {train.batch_size} per process x {world} processes x "
                f"{train.grad_accum} accumulation = {batch} per step") in report
    assert "parameters: " in report and "memory per process: " in report
    assert report.endswith(f"OK: {name} can launch on 1, 2, 4, 8 processes")


def test_check_reads_a_trained_models_config_and_no_weights(tmp_path):
    codec = WavCodec(tiny_codec_config())
    codec.save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    absent = tmp_path / "absent.jsonl"
    report = check_launch("codec-2", "tiny", [f"init_from={tmp_path}", f"data.speech={tmp_path}",
                                              f"valid.speech={absent}"])
    trainable = sum(p.numel() for p in codec.parameters() if p.requires_grad)
    assert f"codec {trainable / 1e6:,.1f}M trainable".split() == \
        next(line for line in report.splitlines() if line.startswith("  codec")).split()[:3]
    assert "init_from" not in report  # neither missing nor built from a config
    assert report.splitlines()[-2].endswith(f"the run reads them): valid.speech {absent}")


@pytest.mark.parametrize(
    ("script", "args", "error"),
    [
        (["-m", "l3se", "train"], ["--world-size", "0"],
         "l3se: error: the world size must be at least 1, got 0"),
        ([str(ROOT / "recipes/train_lm.py")], ["--world-size", "8", "train.grad_accum=0"],
         "l3se: error: train.grad_accum must be at least 1, got 0"),
    ],
)
def test_an_invalid_launch_is_one_line_and_exit_2(script, args, error):
    cmd = [sys.executable, *script, "lm", "--config", "paper", "--check", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip() == error and out.stdout == ""


def test_check_from_the_command_line():
    cmd = [sys.executable, str(ROOT / "recipes/train_codec.py"), "codec-1", "--check",
           "--world-size", "2,8", "train.batch_size=3"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "on 8: batch: 3 per process x 8 processes x 1 accumulation = 24 per step" in out.stdout
    assert out.stdout.strip().endswith("OK: codec-1 can launch on 2, 8 processes")


@pytest.mark.parametrize(("stage", "overrides", "error"), [
    ("codec-2", ["asr.weight=1.0"], "asr: codec-3 options (this is codec-2)"),
    ("codec-1", ["train_parts=[decoder]", "asr.weight=1.0"],
     "train_parts, asr: codec-3 options (this is codec-1)"),
    ("codec-1", ["generator_warmup=5"], "generator_warmup trains the discriminator alone"),
    ("codec-2", ["discriminator=null"], "codec-2 is the stage that trains it"),
    ("codec-3", ["asr.judge=s2t", "judge_from=null"], "asr.judge s2t: set judge_from"),
    ("codec-3", ["ttr.weight=1.0"], "ttr: set summarizer_from"),
    ("codec-3", ["train_parts=[decoder, vocoder]"], "train_parts: no codec part named vocoder"),
])
def test_codec_stage_options_are_checked(stage, overrides, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        check_launch(stage, "tiny", overrides)


def test_a_variant_config_changes_only_what_it_names():
    cls, folder = STAGES["codec-3"].config_class, STAGES["codec-3"].folder
    base = load_config(cls, resolve_config(folder, "tiny"))
    asr = load_config(cls, resolve_config(folder, "tiny_asr"))
    assert asr.asr.weight == 10.0 and asr.judge_from == "runs/s2t-ctc-judge-tiny/model"
    assert (asr.train.output_dir, base.asr) == ("runs/codec3-tiny-asr", None)
    same = dataclasses.replace(asr, asr=None, judge_from=None,
                               train=dataclasses.replace(asr.train, output_dir=base.train.output_dir))
    assert same == base
    sa = load_config(cls, resolve_config(folder, "tiny_sa"))
    assert sa.llm_codec.ftp_heads == 0 and sa.llm_codec.sa_cos_weight == 0.1


@pytest.mark.parametrize("name", ["codec-1", "codec-2", "s2t", "distill", "lm"])
def test_small_scale_launches_and_reads_its_own_scales_models(name):
    """`l3se recipe quickstart --scale small` runs every pipeline stage's small.yaml: each must
    launch, and name the small runs of its upstream stages, never the tiny ones."""
    stage = STAGES[name]
    cfg = load_config(stage.config_class, resolve_config(stage.folder, "small"))
    assert cfg.train.output_dir.endswith("-small")
    for key in stage.upstream:
        assert "-small/" in str(getattr(cfg, key)), key
    assert "OK" in check_launch(name, "small", world_sizes=[1])


def test_build_task_loads_earlier_models_with_the_loader_it_is_given(tmp_path):
    stage = STAGES["codec-2"]
    cfg = load_config(stage.config_class, resolve_config(stage.folder, "tiny"),
                      [f"init_from={tmp_path / 'not-there'}"])
    codec = WavCodec(tiny_codec_config())
    asked = []

    def load(name, config, key, cls):
        asked.append((name, config, key, cls))
        return codec

    task = stage.recipe.build_task("codec-2", cfg, load=load)
    assert asked == [("codec-2", cfg, "init_from", WavCodec)] and task.codec is codec


def test_a_model_folder_without_its_weights_is_a_config_error(tmp_path):
    WavCodec(tiny_codec_config()).save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    cfg = STAGES["codec-2"].config_class(init_from=str(tmp_path))
    with pytest.raises(ConfigError, match=f"^init_from: {tmp_path} is not a saved WavCodec"):
        load_upstream("codec-2", cfg, "init_from", WavCodec)


def test_a_bug_while_building_a_stage_keeps_its_traceback(monkeypatch):
    import recipes.train_codec

    def broken(*args):
        raise ValueError("a bug, not the user's config")

    monkeypatch.setattr(recipes.train_codec, "build_objectives", broken)
    with pytest.raises(ValueError, match="a bug") as e:
        check_launch("codec-1", "tiny")
    assert not isinstance(e.value, ConfigError)
