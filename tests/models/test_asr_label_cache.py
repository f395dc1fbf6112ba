"""Issue 27 item 6: the ASR-consistency loss decodes each clean clip's pseudo-label once."""

import torch

from l3se.models.asr_loss import ASRConsistencyLoss, ASRLossConfig
from l3se.models.codec_objectives import CodecStep


class CountingJudge(torch.nn.Module):
    """Labels each item by its length; counts the items it decoded."""

    def __init__(self):
        super().__init__()
        self.decoded = 0

    def pseudo_labels(self, wav, lengths):
        self.decoded += len(lengths)
        return [[int(n) % 7, 1] for n in lengths]

    def nll(self, wav, lengths, labels):
        return wav.square().mean()


def step(clips, lengths=(800, 600)):
    wav = torch.randn(len(lengths), max(lengths))
    return CodecStep(clean=wav, recon=wav.clone().requires_grad_(True),
                     lengths=torch.tensor(lengths), codes=torch.zeros(2, 1, 1),
                     quantized=torch.zeros(2, 1, 1), texts=[None, None], words=[None, None],
                     step=0, clips=list(clips))


def test_pseudo_labels_are_decoded_once_per_clip():
    judge = CountingJudge()
    loss = ASRConsistencyLoss(ASRLossConfig(label_cache=2), judge)
    loss(step(["a@0+800", "b@0+600"]))
    assert judge.decoded == 2
    out = loss(step(["a@0+800", "b@0+600"]))
    assert judge.decoded == 2 and out.logs["tokens"] == 4
    # A new clip is decoded; the cache keeps the newest 2, and unknown clips are never kept.
    loss(step(["c@1.5+800", None]))
    assert judge.decoded == 4
    loss(step(["a@0+800", None]))
    assert judge.decoded == 6
    assert loss.pseudo_labels(torch.zeros(1, 800), torch.tensor([800]), ["c@1.5+800"]) == [[2, 1]]
