import subprocess
import sys
from pathlib import Path

import pytest

from l3se.cli import main
from l3se.config import load_config
from l3se.models.codec import WavCodec
from recipes.train_codec import CodecRecipeConfig

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


@pytest.mark.parametrize("stage", ["codec1", "codec2"])
@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_configs_load(stage, name):
    cfg = load_config(CodecRecipeConfig, CONFIGS / stage / f"{name}.yaml")
    assert (cfg.model is None) == (stage == "codec2")
    assert (cfg.optim_d is not None) == (stage == "codec2")
    assert cfg.loss.mel == 15.0 and cfg.loss.commitment == 0.25


def test_paper_schedules():
    c1 = load_config(CodecRecipeConfig, CONFIGS / "codec1" / "paper.yaml")
    c2 = load_config(CodecRecipeConfig, CONFIGS / "codec2" / "paper.yaml")
    for cfg, want in ((c1, (80, 10_000, 100_000, 1e-6, 1e-4)), (c2, (20, 5_000, 50_000, 1e-6, 2e-5))):
        got = (cfg.train.batch_size, cfg.optim.warmup_steps, cfg.train.max_steps,
               cfg.optim.min_lr, cfg.optim.lr)
        assert got == want
    assert c1.model.ssl.pretrained == "microsoft/wavlm-large"
    assert c2.init_from == "runs/codec1-paper/model"


def test_codec1_then_codec2_from_the_cli(corpus, tmp_path, capsys):
    speech = str(corpus / "speech.jsonl")
    common = [
        f"data.speech={speech}", f"valid.speech={speech}", "train.max_steps=2",
        "train.batch_size=2", "train.num_workers=0", "train.val_every=2", "train.val_batches=1",
        "train.progress=false", "data.mix.segment_seconds=0.5", "valid.mix.segment_seconds=0.5",
    ]
    out1 = tmp_path / "c1"
    assert main(["train", "codec-1", "--config", "tiny", f"train.output_dir={out1}", *common]) == 0
    assert (out1 / "config.yaml").is_file()
    assert [p.name for p in (out1 / "checkpoints").iterdir()] == ["step_00000002"]
    WavCodec.from_pretrained(out1 / "model")

    out2 = tmp_path / "c2"
    args = ["train", "codec-2", "--config", "tiny", f"train.output_dir={out2}",
            f"init_from={out1 / 'model'}", "discriminator.periods=[2]",
            "discriminator.fft_sizes=[512]", *common]
    assert main(args) == 0
    assert (out2 / "model" / "model.safetensors").is_file()

    # A damaged checkpoint is one clear line, not a traceback.
    weights = out2 / "checkpoints" / "step_00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert main([*args, "train.max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "truncated or damaged" in err and "Traceback" not in err


def test_cli_user_errors(tmp_path, capsys):
    assert main(["train", "codec-1", "--config", "nope"]) == 2
    assert "no config named 'nope'" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["train", "codec-2", "--config", "tiny", f"init_from={missing}"]) == 2
    assert "run `l3se train codec-1` first" in capsys.readouterr().err
    assert main(["train", "codec-1", "--config", "tiny", "train.batch_sise=3"]) == 2
    assert "did you mean 'train.batch_size'" in capsys.readouterr().err


def test_the_script_torchrun_starts_is_l3se_train(tmp_path):
    script = CONFIGS.parent / "train_codec.py"
    missing = tmp_path / "missing"
    run = subprocess.run([sys.executable, str(script), "codec-2", "--config", "tiny",
                          f"init_from={missing}"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == (
        f"l3se: error: init_from: {missing} does not exist (it is codec-1's exported model: run "
        "`l3se train codec-1` first or point init_from at it)"
    )
