"""Issue 27 item 15: semantic alignment reads the seed's layers, each layer's own output."""

import dataclasses

import torch

from l3se.models.llm import QWEN3_TINY, LLMConfig
from l3se.models.llm_codec import LLMCodecConfig, LLMCodecObjective
from l3se.models.tokenizer import build_tokenizer


def test_sa_layers_are_the_seeds_and_recorded_by_hooks(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat"] * 3, tmp_path, vocab_size=300)
    arch = {**QWEN3_TINY, "vocab_size": len(tok), "num_hidden_layers": 32, "hidden_size": 32,
            "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 16}
    cfg = LLMCodecConfig(llm=LLMConfig(pretrained=None, arch=arch), tokenizer=str(tmp_path))
    objective = LLMCodecObjective(cfg, 8, 2, 4)
    # Paper 4.2's "10-25 of 32".
    assert objective.sa_layers == list(range(10, 26))
    objective.cfg = dataclasses.replace(cfg, sa_layers=(0.5, 1.0))
    ids = torch.tensor([[5, 6, 7]])
    with objective._layer_outputs() as states:
        out = objective.llm.model(input_ids=ids, output_hidden_states=True)
    assert len(states) == 17
    assert torch.equal(states[0], out.hidden_states[16])
    # The last layer's own output, not the final norm's.
    last = objective.llm.model.layers[-1]
    assert states[-1].shape == out.last_hidden_state.shape and last is not None
    assert not torch.equal(states[-1], out.last_hidden_state)
