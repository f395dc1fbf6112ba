import pytest
import torch

from l3se.models.llm import QWEN3_0_6B, QWEN3_TINY, LLMConfig, build_qwen3_config
from l3se.models.lm import SpeechLM, SpeechLMConfig

TINY_LLM = {**QWEN3_TINY, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_lm(prefix="acoustic+semantic", **overrides) -> SpeechLM:
    cfg = dict(llm=LLMConfig(pretrained=None, arch=TINY_LLM), prefix=prefix, acoustic_dim=12,
               semantic_dim=6, adapter_hidden=16, n_codebooks=4, codebook_size=32)
    cfg.update(overrides)
    return SpeechLM(SpeechLMConfig(**cfg))


def qwen3_params(a: dict, vocab: int) -> int:
    """Qwen3 parameter count from its config numbers (tied embeddings)."""
    h, hd, i = a["hidden_size"], a["head_dim"], a["intermediate_size"]
    attn = h * hd * (2 * a["num_attention_heads"] + 2 * a["num_key_value_heads"]) + 2 * hd
    layer = attn + 3 * h * i + 2 * h
    return vocab * h + a["num_hidden_layers"] * layer + h


def adapter_params(d_in: int, hidden: int, d_out: int) -> int:
    return d_in * hidden + hidden + hidden * d_out + d_out


def test_paper_config_on_meta_device():
    assert qwen3_params(QWEN3_0_6B, 151936) == 596_049_920  # the published Qwen3-0.6B
    with torch.device("meta"):
        lm = SpeechLM(SpeechLMConfig(llm=LLMConfig(pretrained=None, arch="0.6b")))
    vocab = 2 + 8 * 1024
    assert lm.tokens.vocab_size == vocab == lm.llm.config.vocab_size
    assert lm.llm.lm_head.weight is lm.llm.model.embed_tokens.weight
    n_llm = sum(p.numel() for p in lm.llm.parameters())
    assert n_llm == qwen3_params(QWEN3_0_6B, vocab) == 448_858_112
    n_adapters = sum(p.numel() for p in lm.parameters()) - n_llm
    assert n_adapters == adapter_params(1024, 1024, 512) + adapter_params(4 * 1024, 1024, 512)


def test_prefix_shapes_and_errors():
    torch.manual_seed(0)
    lm = tiny_lm()
    a, s = torch.randn(2, 5, 12), torch.randn(2, 20, 6)
    p = lm.prefix(a, s)
    assert p.shape == (2, 5, 64)
    # Each half of the prefix comes from its own stream.
    p2 = lm.prefix(a, s + 1.0)
    assert torch.equal(p[..., :32], p2[..., :32]) and not torch.allclose(p[..., 32:], p2[..., 32:])
    with pytest.raises(ValueError, match="4x"):
        lm.prefix(a, s[:, :19])
    with pytest.raises(ValueError, match="semantic features"):
        lm.prefix(a)
    assert tiny_lm("acoustic").prefix(a).shape == (2, 5, 64)
    with pytest.raises(ValueError, match="semantic_dim"):
        tiny_lm(semantic_dim=None)


def test_padded_item_matches_its_unpadded_self():
    torch.manual_seed(0)
    lm = tiny_lm().eval()
    prefix, codes = torch.randn(2, 6, 64), torch.randint(0, 32, (2, 4, 6))
    both = lm(prefix, torch.tensor([6, 3]), codes)
    alone = lm(prefix[1:, :3], torch.tensor([3]), codes[1:, :, :3])
    torch.testing.assert_close(both.logits[1, :3], alone.logits[0], atol=1e-5, rtol=1e-4)
    assert both.logits.shape == (2, 6, 4, 32)
    # Garbage past an item's end changes nothing.
    codes2, prefix2 = codes.clone(), prefix.clone()
    codes2[1, :, 3:] = 7
    prefix2[1, 3:] = 100.0
    torch.testing.assert_close(lm(prefix2, torch.tensor([6, 3]), codes2).loss, both.loss)
    assert both.loss.item() == pytest.approx(torch.log(torch.tensor(32.0)).item(), rel=0.2)


def test_loss_falls_and_gradients_reach_adapters():
    torch.manual_seed(0)
    lm = tiny_lm()
    a, s = torch.randn(2, 4, 12), torch.randn(2, 16, 6)
    codes = torch.randint(0, 32, (2, 4, 4))
    lengths = torch.tensor([4, 2])
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = lm(lm.prefix(a, s), lengths, codes)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss))
    assert losses[-1] < 0.5 * losses[0]
    assert lm.semantic_adapter.net[0].weight.grad.abs().sum() > 0


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    lm = tiny_lm().eval()
    lm.save_pretrained(tmp_path / "lm")
    loaded = SpeechLM.from_pretrained(tmp_path / "lm").eval()
    assert loaded.cfg.llm.pretrained is None and loaded.cfg.llm.arch["vocab_size"] == 2 + 4 * 32
    prefix, codes, lengths = torch.randn(1, 3, 64), torch.randint(0, 32, (1, 4, 3)), torch.tensor([3])
    torch.testing.assert_close(loaded(prefix, lengths, codes).logits, lm(prefix, lengths, codes).logits)
    with pytest.raises(FileNotFoundError, match="not a saved SpeechLM"):
        SpeechLM.from_pretrained(tmp_path)


def test_pretrained_llm_gets_a_fresh_audio_vocabulary(tmp_path):
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    text = Qwen3ForCausalLM(build_qwen3_config(TINY_LLM, vocab_size=300))
    text.save_pretrained(tmp_path / "qwen")
    lm = tiny_lm(llm=LLMConfig(pretrained=str(tmp_path / "qwen")))
    assert lm.llm.model.embed_tokens.weight.shape == (2 + 4 * 32, 64)
    assert lm.llm.lm_head.weight is lm.llm.model.embed_tokens.weight
    assert lm.llm.config.vocab_size == 2 + 4 * 32
    # The transformer body is the pretrained one.
    torch.testing.assert_close(lm.llm.model.layers[0].mlp.up_proj.weight,
                               text.model.layers[0].mlp.up_proj.weight)
