from pathlib import Path

import pytest
import torch

from l3se.cli import main
from l3se.config import ConfigError, load_config
from l3se.enhancer import CONFIG_FILE, PARTS, EnhancerConfig
from l3se.models.codec import WavCodec
from l3se.models.heads import AcousticHeadConfig, SemanticHeadConfig
from l3se.models.lm import SpeechLM
from l3se.models.ni_encoder import NIEncoder, NIEncoderConfig
from l3se.models.ssl import SSLConfig
from l3se.training.lm_task import LMTask
from recipes.stages import run_stage
from recipes.train_lm import LMRecipeConfig, build_task
from tests.models.tiny import tiny_codec_config

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "lm"

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_ni_encoder(semantic: bool = True) -> NIEncoder:
    return NIEncoder(NIEncoderConfig(
        ssl=SSLConfig(pretrained=None, arch="tiny", frozen=False),
        acoustic=AcousticHeadConfig(dim=32, intermediate_dim=64, num_layers=1),
        semantic=SemanticHeadConfig(dim=24, ff_dim=48, num_heads=2, num_layers=1, dropout=0.1)
        if semantic else None,
    ))


@pytest.fixture
def parts(tmp_path):
    """Exported tiny codec-2 and distill model directories."""
    torch.manual_seed(0)
    WavCodec(tiny_codec_config(dropout=0.1)).save_pretrained(tmp_path / "codec")
    tiny_ni_encoder().save_pretrained(tmp_path / "ni")
    tiny_ni_encoder(semantic=False).save_pretrained(tmp_path / "ni_acoustic")
    return tmp_path


def overrides(corpus: Path, parts: Path, out: Path, *extra: str) -> list[str]:
    mix = ["mix.segment_seconds=1.0", "seed=0"]
    return [
        f"ni_encoder={parts / 'ni'}", f"codec={parts / 'codec'}", f"train.output_dir={out}",
        f"data.speech={corpus / 'speech.jsonl'}", f"data.noise={corpus / 'noise'}",
        f"data.rir={corpus / 'rir'}", f"valid.speech={corpus / 'speech.jsonl'}",
        f"valid.noise={corpus / 'noise'}", f"valid.rir={corpus / 'rir'}",
        *[f"{split}.{m}" for split in ("data", "valid") for m in mix],
        "lm.codebook_size=64", "lm.adapter_hidden=32", "train.batch_size=2",
        "train.num_workers=0", "train.val_every=2", "train.val_batches=1", "train.ckpt_every=1",
        "train.progress=false", "optim.warmup_steps=1", *extra,
    ]


@pytest.mark.parametrize("name", ["paper", "paper_acoustic_prefix", "tiny"])
def test_configs_load(name):
    cfg = load_config(LMRecipeConfig, CONFIGS / f"{name}.yaml")
    assert cfg.data.mix.p_noise > 0 and cfg.data.mix.p_reverb > 0
    assert cfg.lm.n_codebooks == 8
    if name.startswith("paper"):
        got = (cfg.train.batch_size, cfg.optim.warmup_steps, cfg.train.max_steps,
               cfg.optim.min_lr, cfg.optim.lr)
        assert got == (6, 5_000, 100_000, 1e-5, 1e-4)
        assert cfg.lm.llm.pretrained == "Qwen/Qwen3-0.6B" and cfg.lm.codebook_size == 1024
        assert cfg.ni_encoder == "runs/distill-paper/model"
        assert cfg.codec == "runs/codec2-paper/model"
        want = "acoustic" if name == "paper_acoustic_prefix" else "acoustic+semantic"
        assert cfg.lm.prefix == want
        assert cfg.enhancer.decode.strategy == "greedy"
        assert cfg.enhancer.chunk_seconds is None  # chunks of the training length
    else:
        assert cfg.lm.llm.pretrained is None and cfg.ni_encoder == "runs/distill-tiny/model"
        assert cfg.enhancer.decode.strategy == "mbr"
        # The laptop-scale aids for an LM trained from scratch; the paper's LM has neither.
        assert cfg.lm.frame_inputs and cfg.lm.history_noise == 0.5
    if name.startswith("paper"):
        assert not cfg.lm.frame_inputs and cfg.lm.history_noise == 0.0


def test_train_export_and_resume(corpus, parts, tmp_path):
    out = tmp_path / "run"
    args = overrides(corpus, parts, out, "train.max_steps=3")
    assert run_stage("lm", CONFIGS / "tiny.yaml", args, stop_at=2) == out
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step_00000002"
    assert not (out / "model").exists()
    # Resumes at step 2 and finishes at max_steps with an export.
    assert main(["train", "lm", "--config", str(CONFIGS / "tiny.yaml"), *args]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step_00000003"
    model = out / "model"
    assert (model / CONFIG_FILE).is_file() and all((model / p).is_dir() for p in PARTS)
    # The config's inference settings travel with the model, and so does the training length
    # (the tiny config keeps its chunks at 20 s).
    saved = load_config(EnhancerConfig, model / CONFIG_FILE)
    assert saved.decode.strategy == "mbr"
    assert (saved.trained_seconds, saved.chunk_seconds) == (1.0, 20.0)
    lm = SpeechLM.from_pretrained(model / "lm")
    assert lm.cfg.acoustic_dim == 32 and lm.cfg.semantic_dim == 24  # filled from the encoder
    # The frozen parts leave training untouched.
    for part, kind in (("ni_encoder", NIEncoder), ("codec", WavCodec)):
        before = kind.from_pretrained(parts / ("ni" if part == "ni_encoder" else "codec"))
        after = kind.from_pretrained(model / part)
        for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
            assert torch.equal(a, b), name
    assert list((out / "tb").iterdir())
    # Resuming is exact: an uninterrupted run ends with the same LM.
    straight_args = overrides(corpus, parts, tmp_path / "straight", "train.max_steps=3")
    straight = run_stage("lm", CONFIGS / "tiny.yaml", straight_args)
    again = SpeechLM.from_pretrained(straight / "model" / "lm")
    for (name, a), b in zip(lm.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_task_keeps_frozen_parts_frozen(corpus, parts, tmp_path):
    cfg = load_config(LMRecipeConfig, CONFIGS / "tiny.yaml", overrides(corpus, parts, tmp_path))
    task = build_task("lm", cfg)
    assert isinstance(task, LMTask)
    task.train()
    assert task.lm.training and not task.ni_encoder.training and not task.codec.training
    assert not any(p.requires_grad for p in task.ni_encoder.parameters())
    assert not any(p.requires_grad for p in task.codec.parameters())
    trainable = {id(p) for p in task.generator_parameters()}
    assert trainable == {id(p) for p in task.lm.parameters()}
    wav = torch.randn(2, 16000) * 0.1
    batch = {"noisy": wav, "clean": wav, "lengths": torch.tensor([16000, 9000])}
    out = task.training_step(batch, 0)
    assert out.loss.requires_grad and 0 <= out.logs["accuracy"] <= 1
    val = task.validation_step(batch)
    assert val.audio["enhanced"].shape == (1, 16000)
    assert torch.isfinite(val.metrics["loss"])


def test_user_errors(corpus, parts, tmp_path, capsys):
    base = overrides(corpus, parts, tmp_path)
    cases = [
        ([f"ni_encoder={tmp_path / 'nope'}"], "run `l3se train distill` first"),
        ([f"codec={tmp_path / 'nope'}"], "run `l3se train codec-2` first"),
        ([f"ni_encoder={parts / 'ni_acoustic'}"], "needs an NI-Encoder with a semantic head"),
        (["lm.codebook_size=1024"], "lm.codebook_size is 1024 but the codec has 64"),
        (["lm.acoustic_dim=7"], "lm.acoustic_dim is 7 but the NI-Encoder has 32"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message.replace("`", ".")):
            build_task("lm", load_config(LMRecipeConfig, CONFIGS / "tiny.yaml", [*base, *extra]))
    # The acoustic-only encoder works with an acoustic prefix.
    cfg = load_config(LMRecipeConfig, CONFIGS / "tiny.yaml",
                      [*base, f"ni_encoder={parts / 'ni_acoustic'}", "lm.prefix=acoustic"])
    assert build_task("lm", cfg).lm.semantic_adapter is None
    assert main(["train", "lm", "--config", "tiny", f"ni_encoder={tmp_path / 'nope'}"]) == 2
    assert "run `l3se train distill` first" in capsys.readouterr().err
