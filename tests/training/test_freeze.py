"""Issue 27 item 1: one freeze mechanism that keeps frozen parts frozen, in eval mode, and out of
checkpoints."""

import torch
from torch import nn

from l3se.models.codec import WavCodec
from l3se.models.frozen import freeze
from l3se.training.checkpoint import frozen_parts
from l3se.training.codec_task import CodecTask
from l3se.training.distributed import seed_everything
from tests.models.tiny import tiny_codec_config
from tests.training.test_codec3 import trainer


def test_a_frozen_module_stays_in_eval_mode_and_out_of_the_optimizer():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.teacher = freeze(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    model.train()
    assert model.training and model[1].training
    assert not any(m.training for m in model.teacher.modules())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert frozen_parts(model) == ["teacher"]


def test_frozen_codec_parts_keep_their_codebooks_and_resume(tmp_path):
    # codec-3 with train_parts [decoder] and a restart after 1 idle frame: the frozen quantizer
    # must keep every entry (its fingerprint is what resume checks).
    def task():
        seed_everything(0)
        return CodecTask(WavCodec(tiny_codec_config()), train_parts=["decoder"],
                         dead_code_frames=1)

    first = task()
    codebooks = {k: v.clone() for k, v in first.codec.quantizer.state_dict().items()}
    first.train()
    assert first.codec.decoder.training
    assert not any(first.codec.get_submodule(p).training
                   for p in ("mixture", "encoder", "quantizer"))
    run = trainer(tmp_path, first, max_steps=3)
    run.fit(stop_at=2)
    for k, v in first.codec.quantizer.state_dict().items():
        assert torch.equal(v, codebooks[k]), k
    resumed = trainer(tmp_path, task(), max_steps=3)
    assert resumed.fit() == 3
