from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from l3se.cli import main
from l3se.config import load_config
from l3se.models.ni_encoder import NIEncoder
from l3se.training.distill_task import DistillLossConfig, DistillTask, masked_mse
from recipes.train_distill import DistillRecipeConfig
from tests.models.test_ni_encoder import tiny_teachers

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "distill"


def make_task(tmp_path, targets="teachers", **teacher_dims):
    codec, s2t = tiny_teachers(tmp_path, **teacher_dims)
    semantic_teacher = s2t if targets != "acoustic" else None
    student = NIEncoder.from_teachers(codec, semantic_teacher, semantic=targets != "acoustic")
    teacher = NIEncoder.from_teachers(codec, semantic_teacher, semantic=targets == "teachers")
    return DistillTask(student, teacher, DistillLossConfig(targets=targets)), codec, s2t


def noisy_batch(seed=0, n=2, samples=4000):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    clean = 0.3 * torch.sin(2 * torch.pi * (150 + 50 * torch.rand(n, 1, generator=g)) * t)
    noisy = clean + 0.1 * torch.randn(n, samples, generator=g)
    lengths = torch.tensor([samples] + [samples - 1500] * (n - 1))
    return {"noisy": noisy, "clean": clean, "lengths": lengths}


def test_teachers_see_clean_and_student_noisy(tmp_path):
    task, _, _ = make_task(tmp_path)
    seen = {}
    for name, module in (("teacher", task.teacher.ssl), ("student", task.student.ssl)):
        module.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args))
    batch = noisy_batch()
    task.train()
    task.training_step(batch, 0)
    pad = (0, 4 * 1280 - 4000)
    assert torch.equal(seen["teacher"][0], F.pad(batch["clean"], pad))
    assert torch.equal(seen["student"][0], F.pad(batch["noisy"], pad))
    assert torch.equal(seen["teacher"][1], batch["lengths"])


def test_targets_are_the_teacher_encoders(tmp_path):
    task, codec, s2t = make_task(tmp_path)
    batch = noisy_batch()
    target = task.targets(batch["clean"], batch["lengths"])
    with torch.no_grad():
        torch.testing.assert_close(target.acoustic, codec.encode_latent(batch["clean"], batch["lengths"]))
        torch.testing.assert_close(target.semantic, s2t.encode(batch["clean"], batch["lengths"])[0])


def test_distillation_loss_falls_and_teachers_stay_frozen(tmp_path):
    task, _, _ = make_task(tmp_path)
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    assert not any(p.requires_grad for p in task.teacher.parameters())
    params = [p for p in task.parameters() if p.requires_grad]
    assert len(params) == len(list(task.student.parameters()))
    opt = torch.optim.Adam(params, lr=1e-3)
    batch = noisy_batch()
    torch.manual_seed(0)
    losses = []
    for step in range(8):
        task.train()
        assert not task.teacher.training and task.student.training
        out = task.training_step(batch, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
        assert set(out.logs) == {"acoustic", "semantic", "loss"}
    print("distill loss", [round(x, 4) for x in losses])
    assert losses[0] > 0 and losses[-1] < 0.5 * losses[0]
    for k, v in task.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k

    val = task.validation_step(batch).metrics
    # The student has learnt this batch; the teacher on the same noisy input has not.
    assert val["loss"] < val["loss_teacher_on_noisy"]
    extras = task.log_extras()
    for name in ("acoustic_teacher", "semantic_teacher", "acoustic_student", "semantic_student"):
        weights = [extras[f"mixture/{name}/layer_{i:02d}"] for i in range(3)]
        assert sum(weights) == pytest.approx(1.0)


def test_masked_mse_ignores_padded_frames():
    x, y = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    x[1, 2:] = 100.0
    x[0, 0] = 1.0
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    assert float(masked_mse(x, y, pad)) == pytest.approx(3.0 / (6 * 3))
    assert float(masked_mse(x, y, None)) > 100.0


def test_acoustic_only_mode(tmp_path):
    task, _, _ = make_task(tmp_path, targets="acoustic")
    assert task.student.semantic is None
    out = task.training_step(noisy_batch(), 0)
    assert set(out.logs) == {"acoustic", "loss"}
    assert torch.equal(out.logs["acoustic"], out.logs["loss"])
    assert set(task.layer_weights()) == {"acoustic_teacher", "acoustic_student"}


def test_fixed_layer_targets(tmp_path):
    # Heads as wide as the tiny WavLM (64), as fixed-layer targets require.
    task, codec, _ = make_task(tmp_path, targets="fixed_layers", codec_dim=64, semantic_dim=64)
    batch = noisy_batch()
    target = task.targets(batch["clean"], batch["lengths"])
    with torch.no_grad():
        states = codec.ssl(F.pad(batch["clean"], (0, 5120 - 4000)), batch["lengths"])
    assert target.acoustic.shape == (2, 4, 64) and target.semantic.shape == (2, 16, 64)
    torch.testing.assert_close(target.acoustic[:, 1], states[0][:, 4:8].mean(1))
    torch.testing.assert_close(target.semantic, states[-1])
    out = task.training_step(batch, 0)
    assert set(out.logs) == {"acoustic", "semantic", "loss"} and float(out.loss) > 0

    with pytest.raises(ValueError, match="hidden states of size 64"):
        make_task(tmp_path, targets="fixed_layers")


def test_fixed_layer_targets_are_l0_and_l24_whatever_transformers_records(tmp_path):
    """L0 is the first transformer layer's input, L24 the last layer's output before WavLM's
    final LayerNorm; transformers up to 5.12 reported that LayerNorm's output as its last hidden
    state, which ``tie_last_hidden_states`` reproduces in 5.24."""
    task, _, _ = make_task(tmp_path, targets="fixed_layers", codec_dim=64, semantic_dim=64)
    batch = noisy_batch()
    wavlm = task.teacher.ssl.model
    seen = {}
    hooks = [
        wavlm.encoder.pos_conv_embed.register_forward_hook(
            lambda _, args, out: seen.update(l0=args[0] + out)
        ),
        wavlm.register_forward_hook(lambda _, a, out: seen.update(output=out.last_hidden_state)),
    ]
    target = task.targets(batch["clean"], batch["lengths"])
    for hook in hooks:
        hook.remove()
    pooled = F.avg_pool1d(seen["l0"].transpose(1, 2), 4).transpose(1, 2)
    torch.testing.assert_close(target.acoustic, pooled)
    torch.testing.assert_close(wavlm.encoder.layer_norm(target.semantic), seen["output"])
    wavlm.config.tie_last_hidden_states = True
    again = task.targets(batch["clean"], batch["lengths"])
    torch.testing.assert_close(again.acoustic, target.acoustic)
    torch.testing.assert_close(again.semantic, target.semantic)


@pytest.mark.parametrize(
    "name, targets, s2t",
    [
        ("paper", "teachers", "runs/s2t-paper/model"),
        ("paper_no_distill", "none", None),
        ("paper_acoustic_only", "acoustic", None),
        ("paper_fixed_layers", "fixed_layers", "runs/s2t-paper/model"),
        ("paper_ctc", "teachers", "runs/s2t-ctc-paper/model"),
    ],
)
def test_paper_configs(name, targets, s2t):
    cfg = load_config(DistillRecipeConfig, CONFIGS / f"{name}.yaml")
    got = (cfg.train.batch_size, cfg.optim.warmup_steps, cfg.train.max_steps, cfg.optim.min_lr,
           cfg.optim.lr)
    assert got == (6, 20_000, 200_000, 1e-6, 1e-4)  # Table 1, Noise-Invariant Encoder
    # Fine-tuning settings for WavLM-Large (our choice), not the GAN stage's.
    optim = (tuple(cfg.optim.betas), cfg.optim.weight_decay, cfg.optim.grad_clip)
    assert optim == ((0.9, 0.98), 0.01, 1.0)
    assert (cfg.loss.targets, cfg.s2t, cfg.codec) == (targets, s2t, "runs/codec2-paper/model")
    assert cfg.data.mix.p_noise == 1.0 and cfg.data.mix.p_reverb == 0.5


def _save_teachers(tmp_path):
    codec, s2t = tiny_teachers(tmp_path)
    codec.save_pretrained(tmp_path / "codec")
    s2t.save_pretrained(tmp_path / "s2t")
    return codec, s2t


def test_recipe_end_to_end_with_resume(corpus, tmp_path):
    codec, _ = _save_teachers(tmp_path)
    out = tmp_path / "run"
    common = [
        "--config", "tiny", f"codec={tmp_path / 'codec'}", f"s2t={tmp_path / 's2t'}",
        f"data.speech={corpus / 'speech.jsonl'}", f"data.noise={corpus / 'noise'}",
        f"data.rir={corpus / 'rir'}", f"valid.speech={corpus / 'speech.jsonl'}",
        f"valid.noise={corpus / 'noise'}", f"valid.rir={corpus / 'rir'}",
        f"train.output_dir={out}", "train.max_steps=2", "train.batch_size=2",
        "train.num_workers=0", "train.val_every=2", "train.val_batches=1", "train.ckpt_every=1",
        "train.progress=false", "data.mix.segment_seconds=0.5", "valid.mix.segment_seconds=0.5",
    ]
    assert main(["train", "distill", "--stop-at", "1", *common]) == 0
    assert not (out / "model").exists()
    # The frozen teacher is rebuilt from codec and s2t on resume, not copied into checkpoints.
    with safe_open(str(out / "checkpoints" / "step_00000001" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert {k.split(".")[0] for k in saved} == {"student"}
    assert main(["train", "distill", *common]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step_00000002"
    png = out / "model" / "layer_weights.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    student = NIEncoder.from_pretrained(out / "model")
    assert student.semantic_dim == 48 and student.acoustic_dim == 32
    # Two steps moved the student off its teacher initialisation.
    assert not torch.equal(student.acoustic.backbone.embed.weight, codec.encoder.backbone.embed.weight)


def test_recipe_without_distillation_exports_the_teachers(tmp_path):
    codec, _ = _save_teachers(tmp_path)
    out = tmp_path / "none"
    args = ["train", "distill", "--config", "paper_no_distill", f"codec={tmp_path / 'codec'}",
            f"train.output_dir={out}"]
    assert main(args) == 0
    student = NIEncoder.from_pretrained(out / "model")
    assert student.semantic is None
    assert torch.equal(student.acoustic.backbone.embed.weight, codec.encoder.backbone.embed.weight)
    assert (out / "model" / "layer_weights.png").is_file() and (out / "config.yaml").is_file()


def test_recipe_user_errors(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["train", "distill", "--config", "tiny", f"codec={missing}"]) == 2
    assert "run `l3se train codec-2` first" in capsys.readouterr().err
    _save_teachers(tmp_path)
    args = ["train", "distill", "--config", "tiny", f"codec={tmp_path / 'codec'}"]
    assert main([*args, f"s2t={missing}"]) == 2
    assert "run `l3se train s2t` first" in capsys.readouterr().err
    assert main([*args, "data.noise=null"]) == 2
    assert "learns from noisy speech" in capsys.readouterr().err
    assert main([*args, "s2t=null"]) == 2
    assert "set s2t" in capsys.readouterr().err
