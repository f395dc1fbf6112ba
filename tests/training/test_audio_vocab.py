"""Issue 27 item 14: codec-3 exports LLM-Codec's trained audio vocabulary and stage lm starts
from it."""

import torch

from l3se.models.codec import WavCodec
from l3se.models.llm import QWEN3_TINY, LLMConfig
from l3se.models.llm_codec import LLMCodecConfig, LLMCodecObjective, read_audio_vocab
from l3se.models.lm import SpeechLM, SpeechLMConfig
from l3se.models.tokenizer import build_tokenizer
from l3se.training.codec_task import CodecTask
from tests.models.tiny import tiny_codec_config


def test_lm_starts_from_the_exported_audio_vocabulary(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat"] * 3, tmp_path / "tok", vocab_size=300)
    arch = {**QWEN3_TINY, "vocab_size": len(tok), "tie_word_embeddings": False}
    codec = WavCodec(tiny_codec_config())
    c = codec.cfg
    objective = LLMCodecObjective(
        LLMCodecConfig(llm=LLMConfig(pretrained=None, arch=arch), tokenizer=str(tmp_path / "tok")),
        c.dim, c.n_codebooks, c.codebook_size, codec.frame_length)
    with torch.no_grad():
        objective.heads[0].rows.add_(1.0)  # as if trained apart from the embeddings
    CodecTask(codec, objectives=[objective]).export(tmp_path / "model")
    embed, head = read_audio_vocab(tmp_path / "model")
    assert torch.equal(embed, objective.audio_embed.detach())
    assert torch.equal(head, objective.heads[0].rows.detach())

    lm = SpeechLM(SpeechLMConfig(llm=LLMConfig(pretrained=None, arch=arch), acoustic_dim=32,
                                 semantic_dim=24, adapter_hidden=16, n_codebooks=c.n_codebooks,
                                 codebook_size=c.codebook_size))
    lm.load_audio_vocabulary(embed, head)
    n = lm.tokens.n_specials
    assert torch.equal(lm.llm.model.embed_tokens.weight[n:], embed.flatten(0, 1))
    assert torch.equal(lm.codebook_head(), head)
