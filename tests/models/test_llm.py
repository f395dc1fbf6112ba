import re
from pathlib import Path

import pytest
import torch

from l3se.models import llm
from l3se.models.llm import (
    TRANSFORMERS_BELOW,
    TRANSFORMERS_MIN,
    LLMConfig,
    build_qwen3,
    build_qwen3_config,
)
from l3se.models.ssl import SSLConfig, WavLMBackbone

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_a_bf16_checkpoint_loads_with_fp32_weights(tmp_path):
    """Qwen/Qwen3-0.6B is stored in bf16, and transformers 5 keeps a checkpoint's dtype: the LM
    stage would fine-tune bf16 weights."""
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    saved = Qwen3ForCausalLM(build_qwen3_config("tiny", vocab_size=300)).to(torch.bfloat16)
    saved.save_pretrained(tmp_path / "qwen")
    model = build_qwen3(LLMConfig(pretrained=str(tmp_path / "qwen")))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    torch.testing.assert_close(model.lm_head.weight, saved.lm_head.weight.float())


@pytest.mark.parametrize("version", ["4.57.1", "5.0.0", "6.0.0"])
def test_an_unsupported_transformers_is_refused_in_one_line(monkeypatch, version):
    monkeypatch.setattr(llm, "version", {"transformers": version}.__getitem__)
    message = rf"^l3se needs transformers >=5\.1,<6\.0; found {re.escape(version)}$"
    with pytest.raises(ImportError, match=message):
        build_qwen3(LLMConfig(pretrained=None, arch="tiny"))
    with pytest.raises(ImportError, match=message):
        WavLMBackbone(SSLConfig(pretrained=None, arch="tiny"))


def test_a_development_release_inside_the_range_is_accepted(monkeypatch):
    monkeypatch.setattr(llm, "version", {"transformers": "5.99.0.dev0"}.__getitem__)
    build_qwen3(LLMConfig(pretrained=None, arch="tiny"), vocab_size=16)


def test_the_checked_range_is_the_declared_one():
    declared = re.search(r'"transformers>=(\d+)\.(\d+),<(\d+)"', PYPROJECT.read_text())
    assert declared, "pyproject.toml must bound transformers as >=A.B,<C"
    low_major, low_minor, high = map(int, declared.groups())
    assert ((low_major, low_minor), (high, 0)) == (TRANSFORMERS_MIN, TRANSFORMERS_BELOW)
