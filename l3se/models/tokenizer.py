"""Text tokenizers for WavS2T's transcripts.

At paper scale the tokenizer is Qwen3's own (``Qwen/Qwen3-0.6B``). Offline, ``build_tokenizer``
trains a small byte-level BPE on the training transcripts and saves it in the same
Hugging Face format, so both load through ``transformers.AutoTokenizer`` and the model code
never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def build_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512):
    """Train a lower-casing byte-level BPE on ``texts``, save it to ``out_dir`` and return it
    (a ``PreTrainedTokenizerFast``). The vocabulary holds the 256 bytes, so any text encodes;
    it is smaller than ``vocab_size`` when the texts run out of merges."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("build_tokenizer needs at least one non-empty transcript")
    tok = Tokenizer(models.BPE())
    # Transcripts come upper case (LibriSpeech) or mixed (TTS prompts): one case halves the
    # vocabulary a small model must learn.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(name_or_dir: str | Path):
    """``AutoTokenizer`` from a hub name or a saved folder, with a pad token guaranteed
    (falls back to eos, as Qwen3's base tokenizer may lack one)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_dir))
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {name_or_dir} has no eos token to end a transcript with")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
