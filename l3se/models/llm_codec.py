"""LLM-Codec (seed 003, code voidful/llm-codec): codec-3 objectives that make the codec's tokens
predictable and meaningful to a frozen LLM.

    quantized [B, D, T12] -> GumbelBridge -> hard one-hot y [B, T12, Q, K]   (CE vs. codes [B, Q, T12])
    y @ E_audio [Q, K, H] -> audio embeddings, frame-major [B, Q*T12, H]     (f0c0 .. f0c(Q-1), f1c0 ..)
    frozen Qwen3 (inputs_embeds) -> last hidden state -> MedusaHead j -> token n+1+j   (FTP)
                                 -> hidden states of the middle layers, last position
    transcript -> frozen Qwen3 (no grad) -> same layers, last token          (SA: 1 - cos, InfoNCE)

The straight-through Gumbel sample carries the FTP and SA gradients back through the bridge into
the quantized latent and, by the quantizer's own straight-through estimator, into the encoder.
Only the bridge, E_audio and the heads are this objective's parameters; the LLM never trains.

Schedule (paper section 4.4 and run_codec_train.sh): the bridge cross-entropy is on at every step;
FTP ramps in linearly after ``ftp_start``, SA after ``sa_start``. The seed's discriminator-only
warm-up (its first 10k steps) is codec-3's ``generator_warmup``, during which ``CodecTask`` runs no
objective at all; the starts count from step 0, so they lie past it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from l3se.models.codec_objectives import CodecObjective, CodecStep, ObjectiveOutput
from l3se.models.frozen import freeze
from l3se.models.llm import PAPER_QWEN3, LLMConfig, build_qwen3
from l3se.models.tokenizer import load_tokenizer

# Cross-entropy target of a position that predicts nothing (past the end, padding).
IGNORE = -100
# Written beside the exported codec: the trained audio vocabulary that stage lm can start from
# (``audio_vocab_from_codec``), as the seed's speech LM starts from it.
AUDIO_VOCAB_FILE = "audio_vocab.safetensors"


def read_audio_vocab(codec_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(input embeddings, next-token head rows), each [Q, K, H], of a codec-3 model directory
    trained with LLM-Codec."""
    from safetensors.torch import load_file

    path = Path(codec_dir) / AUDIO_VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: only a codec-3 model trained with llm_codec "
                                "exports an audio vocabulary")
    tensors = load_file(str(path))
    return tensors["embed"], tensors["head"]


@dataclass
class LLMCodecConfig:
    # The frozen LLM. The paper froze Qwen3-4B-Instruct; l3se's LLM is Qwen3-0.6B.
    llm: LLMConfig = field(default_factory=LLMConfig)
    # Tokenizer of the transcripts that SA feeds the same LLM: its own at paper scale.
    tokenizer: str = PAPER_QWEN3
    # train.py adds the bridge CE at weight 1 from the first step.
    bridge_weight: float = 1.0
    # Paper A.1: cosine annealing of the Gumbel temperature from 1.0 to 0.3 over 20k steps.
    tau_start: float = 1.0
    tau_end: float = 0.3
    tau_steps: int = 20000
    # Medusa heads; head j predicts the token j+1 places ahead (0 disables FTP). Paper Table 4:
    # the number of heads changes nothing measurable, and one head (next token) suffices.
    ftp_heads: int = 1
    # Paper Table 5 / run_codec_train.sh: FTP weight 0.2, delayed to 10k, linear ramp over 2k.
    ftp_weight: float = 0.2
    ftp_start: int = 10000
    ftp_ramp: int = 2000
    # Paper Table 5 / run_codec_train.sh: SA cosine 0.1 and contrastive 0.05, delayed to 12k,
    # linear ramp over 2k (both weights 0 disable SA).
    sa_cos_weight: float = 0.1
    sa_contrastive_weight: float = 0.05
    sa_start: int = 12000
    sa_ramp: int = 2000
    # Paper 4.2: layers L/3 .. 0.8 L (10-25 of 32), as fractions of the LLM's depth, rounded
    # down as the seed's int() does.
    sa_layers: tuple[float, float] = (1 / 3, 0.8)
    # Paper Table 6: FIFO of 512 text vectors, logit scale 5.0, label smoothing 0.1.
    bank_size: int = 512
    contrastive_scale: float = 5.0
    label_smoothing: float = 0.1
    # Transcripts of a 4 s crop are short; longer ones are cut (their last token is then pooled).
    max_text_tokens: int = 64

    def __post_init__(self):
        lo, hi = self.sa_layers
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"sa_layers {self.sa_layers}: need 0 < first <= last <= 1")
        if self.tau_steps <= 0 or self.tau_end <= 0:
            raise ValueError("tau_steps and tau_end must be positive")
        if min(self.ftp_heads, self.bank_size, self.max_text_tokens) < 0:
            raise ValueError("ftp_heads, bank_size and max_text_tokens cannot be negative")


def gumbel_tau(step: int, start: float, end: float, steps: int) -> float:
    """Cosine annealing from ``start`` at step 0 to ``end`` at ``steps``, constant after."""
    t = min(max(step / steps, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def ramp(step: int, start: int, length: int) -> float:
    """0 before ``start``, rising linearly to 1 at ``start + length``, 1 after."""
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min((step - start) / length, 1.0)


def future_targets(ids: torch.Tensor, j: int) -> torch.Tensor:
    """ids [B, N] -> [B, N]: entry n is ids[n + j + 1], the token head j predicts from the hidden
    state at position n (head 0: the next token); IGNORE where that runs past the end."""
    offset = j + 1
    return F.pad(ids[:, offset:], (0, min(offset, ids.shape[1])), value=IGNORE)


def inverse_distance_weights(n_heads: int) -> torch.Tensor:
    """[n_heads]: w_j proportional to 1/(j+1), summing to 1 (paper eq. 6)."""
    w = 1.0 / torch.arange(1, n_heads + 1, dtype=torch.float32)
    return w / w.sum()


def sample_like(rows: torch.Tensor, n: int) -> torch.Tensor:
    """n [n, H] draws from the Gaussian with the mean and full covariance of ``rows`` [V, H].

    The covariance is factored by eigendecomposition rather than Cholesky: a vocabulary with
    fewer rows than dimensions, or with dead directions, has a singular covariance."""
    if rows.is_meta:
        return torch.empty(n, rows.shape[1], device="meta")
    rows = rows.detach().float()
    mean = rows.mean(0)
    centred = rows - mean
    cov = (centred.T @ centred).double() / max(rows.shape[0] - 1, 1)
    eigval, eigvec = torch.linalg.eigh(cov)
    factor = (eigvec * eigval.clamp_min(0).sqrt()).float()  # cov = factor @ factor.T
    return mean + torch.randn(n, rows.shape[1], device=rows.device) @ factor.T


class GumbelBridge(nn.Module):
    """quantized [B, D, T12] -> per-codebook logits [B, T12, Q, K] and a one-hot choice of the
    same shape: a hard Gumbel-softmax sample in training (straight-through: the forward pass
    sees discrete tokens, the backward pass the softmax's gradient), the argmax in eval."""

    def __init__(self, latent_dim: int, n_codebooks: int, codebook_size: int):
        super().__init__()
        self.shape = (n_codebooks, codebook_size)
        self.proj = nn.Linear(latent_dim, n_codebooks * codebook_size)

    def forward(self, quantized: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.proj(quantized.transpose(1, 2)).float().unflatten(-1, self.shape)
        if self.training:
            y = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
        else:
            y = F.one_hot(logits.argmax(-1), self.shape[1]).to(logits.dtype)
        return logits, y


class MedusaHead(nn.Module):
    """hidden [B, N, H] -> hidden + SiLU(Linear(hidden)) [B, N, H], scored against ``rows``
    [Q, K, H] (one output row per codebook entry).

    As in Medusa, the residual block starts at zero, so a new head is exactly the LLM's own
    output head over the audio vocabulary."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        hidden = rows.shape[-1]
        self.block = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.block.weight)
        nn.init.zeros_(self.block.bias)
        self.rows = nn.Parameter(rows.detach().clone())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + F.silu(self.block(hidden))


def future_token_loss(
    hidden: torch.Tensor, ids: torch.Tensor, heads: nn.ModuleList, n_codebooks: int
) -> torch.Tensor:
    """hidden [B, N, H], codec entries ids [B, N] (frame-major, IGNORE at padding) -> [J]
    cross-entropy of each head, each target scored only against its own codebook's K rows (as
    stage lm scores): the only entries that can ever occupy that position."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    losses = []
    for j, head in enumerate(heads):
        states = head(hidden)
        targets = future_targets(ids, j)
        codebook = (positions + j + 1) % n_codebooks
        total = states.new_zeros((), dtype=torch.float32)
        for q in range(n_codebooks):
            at = codebook == q
            logits = states[:, at] @ head.rows[q].to(states.dtype).T  # [B, N/Q, K]
            total = total + F.cross_entropy(
                logits.float().flatten(0, 1), targets[:, at].flatten(),
                ignore_index=IGNORE, reduction="sum",
            )
        losses.append(total / (targets != IGNORE).sum().clamp_min(1))
    return torch.stack(losses)


class TextBank(nn.Module):
    """FIFO of the latest ``size`` text vectors per aligned layer, oldest first: the negatives of
    the contrastive loss. A fixed-size buffer plus a fill count, so checkpoints carry it and a
    resumed run keeps its negatives."""

    def __init__(self, n_layers: int, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("store", torch.zeros(n_layers, size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def vectors(self) -> torch.Tensor:
        """[L, m, H], m <= size, oldest first; a copy, which a later ``push`` leaves alone
        (a loss may still need it for its backward pass)."""
        return self.store[:, : int(self.filled)].clone()

    @torch.no_grad()
    def push(self, vectors: torch.Tensor) -> None:
        """Append [L, n, H] (in order), dropping the oldest beyond ``size``."""
        kept = torch.cat([self.vectors(), vectors.to(self.store.dtype)], 1)
        kept = kept[:, max(kept.shape[1] - self.size, 0) :]
        self.store[:, : kept.shape[1]] = kept
        self.filled.fill_(kept.shape[1])


class LLMCodecObjective(CodecObjective):
    """See the module docstring. ``latent_dim``, ``n_codebooks``, ``codebook_size`` and
    ``frame_length`` (samples per codec frame) come from the codec being trained."""

    name = "llm_codec"

    def __init__(
        self,
        cfg: LLMCodecConfig,
        latent_dim: int,
        n_codebooks: int,
        codebook_size: int,
        frame_length: int = 1280,
    ):
        super().__init__()
        self.cfg = cfg
        self.n_codebooks = n_codebooks
        self.frame_length = frame_length
        self._tokenizer = None
        llm = build_qwen3(cfg.llm)
        self.llm = freeze(llm)
        hidden = llm.config.hidden_size
        # Paper 5.2: audio embeddings drawn at random (not from the LLM) lose the whole SALMon
        # gain. Rows drawn from the Gaussian of the text rows (the rows the tokenizer reaches:
        # Qwen3 pads its matrix with untrained ones) arrive at the layers with the norms and
        # directions the frozen LLM is used to, as transformers' mean_resizing does for new
        # tokens, but with the full covariance instead of shrinking it 1e9-fold: every token
        # stays distinct. Copying or mixing text rows would instead make audio tokens read as
        # particular words, or crowd them near the mean.
        text_rows = llm.get_input_embeddings().weight
        if not text_rows.is_meta:  # a launch check's model has no rows to draw from
            text_rows = text_rows[: self._text_rows(llm.config.vocab_size)]
        q, k = n_codebooks, codebook_size
        self.audio_embed = nn.Parameter(sample_like(text_rows, q * k).view(q, k, hidden))
        # The heads start as the LLM's output head over the audio vocabulary (paper eq. 5):
        # Qwen3 ties that head to its input embedding, so its audio rows are E_audio.
        if llm.config.tie_word_embeddings:
            head_rows = self.audio_embed
        else:
            head_rows = sample_like(llm.get_output_embeddings().weight[: len(text_rows)], q * k)
            head_rows = head_rows.view(q, k, hidden)
        self.heads = nn.ModuleList(MedusaHead(head_rows) for _ in range(cfg.ftp_heads))
        self.register_buffer(
            "head_weights", inverse_distance_weights(cfg.ftp_heads), persistent=False
        )
        self.bridge = GumbelBridge(latent_dim, q, k)
        self.bank = TextBank(len(self.sa_layers), cfg.bank_size, hidden)

    @property
    def sa_layers(self) -> list[int]:
        """The aligned decoder layers, numbered from 1 (layer l is ``model.layers[l - 1]``)."""
        n = self.llm.config.num_hidden_layers
        lo, hi = (min(max(int(f * n), 1), n) for f in self.cfg.sa_layers)
        return list(range(lo, hi + 1))

    @contextlib.contextmanager
    def _layer_outputs(self) -> Iterator[list[torch.Tensor]]:
        """The outputs of the aligned layers, recorded by hooks during the LLM calls in the
        block: each layer's own output, whereas ``hidden_states[-1]`` is the final norm's in some
        transformers versions and the last layer's in others."""
        outputs: list[torch.Tensor] = []

        def record(_, args, out):
            outputs.append(out[0] if isinstance(out, tuple) else out)

        layers = self.llm.model.layers
        hooks = [layers[i - 1].register_forward_hook(record) for i in self.sa_layers]
        try:
            yield outputs
        finally:
            for hook in hooks:
                hook.remove()

    @property
    def tokenizer(self):
        """The transcripts' tokenizer, loaded when first needed (a launch check builds the
        objective on the meta device without the hub)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.tokenizer)
            # Last-position pooling reads the last real token at ``mask.sum() - 1``.
            self._tokenizer.padding_side = "right"
        return self._tokenizer

    def _text_rows(self, vocab_size: int) -> int:
        """Embedding rows the tokenizer reaches: Qwen3 pads its matrix with untrained ones."""
        n_text = len(self.tokenizer)
        if n_text > vocab_size:
            raise ValueError(f"tokenizer {self.cfg.tokenizer} has {n_text} tokens, the LLM's "
                             f"vocabulary only {vocab_size}")
        return n_text

    def audio_embeddings(self) -> torch.Tensor:
        """E_audio [Q, K, H]: row (q, k) is the LLM input of entry k of codebook q (the live
        parameter, e.g. for stage lm to start from)."""
        return self.audio_embed

    def export(self, path: Path) -> None:
        """E_audio and the next-token head's rows (E_audio again without FTP heads); the
        head's residual block, which the LM has no place for, is left out."""
        from safetensors.torch import save_file

        head = self.heads[0].rows if len(self.heads) else self.audio_embed
        save_file({"embed": self.audio_embed.detach().float().contiguous().cpu(),
                   "head": head.detach().float().contiguous().cpu()},
                  str(Path(path) / AUDIO_VOCAB_FILE))

    def weights(self, step: int) -> tuple[float, float, float]:
        """(FTP, SA cosine, SA contrastive) weights at optimizer step ``step``."""
        c = self.cfg
        ftp = c.ftp_weight * ramp(step, c.ftp_start, c.ftp_ramp) if c.ftp_heads else 0.0
        sa = ramp(step, c.sa_start, c.sa_ramp)
        return ftp, c.sa_cos_weight * sa, c.sa_contrastive_weight * sa

    def embed(self, y: torch.Tensor) -> torch.Tensor:
        """One-hot choices [B, T12, Q, K] -> LLM inputs [B, Q*T12, H], frame-major."""
        return torch.einsum("btqk,qkh->btqh", y, self.audio_embed).flatten(1, 2)

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        codes = step.codes
        b, q, t = codes.shape
        if (q, step.quantized.shape[1]) != (self.n_codebooks, self.bridge.proj.in_features):
            raise ValueError(
                f"codes of {q} codebooks and a {step.quantized.shape[1]}-dim latent; this "
                f"objective was built for {self.n_codebooks} and {self.bridge.proj.in_features}"
            )
        frames = (step.lengths + self.frame_length - 1) // self.frame_length
        valid = torch.arange(t, device=codes.device)[None] < frames[:, None]  # [B, T12]
        cfg = self.cfg

        tau = gumbel_tau(step.step, cfg.tau_start, cfg.tau_end, cfg.tau_steps)
        logits, y = self.bridge(step.quantized, tau)
        targets = codes.transpose(1, 2)  # [B, T12, Q]
        mask = valid[..., None].expand_as(targets)
        bridge_ce = F.cross_entropy(logits[mask], targets[mask])
        loss = cfg.bridge_weight * bridge_ce
        logs = {
            "bridge_ce": bridge_ce,
            "bridge_accuracy": (logits.argmax(-1) == targets)[mask].float().mean(),
            "tau": torch.tensor(tau, device=codes.device),
        }

        w_ftp, w_cos, w_con = self.weights(step.step)
        sa_on = w_cos > 0 or w_con > 0
        with_text = sum(bool(text and text.strip()) for text in step.texts)
        run_sa = sa_on and with_text > 0
        counts = {}
        if sa_on:
            # Logged on every step SA is on, counted by the items it scored: every rank logs the
            # same keys, and a batch without transcripts does not count as a zero loss.
            zero = torch.zeros((), device=codes.device)
            logs.update(sa_cos=zero, sa_contrastive=zero)
            n = torch.tensor(float(with_text), device=codes.device)
            counts.update(sa_cos=n, sa_contrastive=n)
        if w_ftp > 0 or run_sa:
            token_valid = valid.repeat_interleave(q, dim=1)  # [B, Q*T12], frame-major
            with self._layer_outputs() if run_sa else contextlib.nullcontext([]) as audio_states:
                out = self.llm.model(
                    inputs_embeds=self.embed(y), attention_mask=token_valid.long()
                )
            if w_ftp > 0:
                ids = targets.reshape(b, -1).masked_fill(~token_valid, IGNORE)
                per_head = future_token_loss(out.last_hidden_state, ids, self.heads, q)
                ftp = (self.head_weights * per_head).sum()
                loss = loss + w_ftp * ftp
                logs["ftp"] = ftp
                logs.update({f"ftp_offset{j + 1}": ce for j, ce in enumerate(per_head)})
            if run_sa:
                cos, con = self.semantic_alignment(audio_states, token_valid, step.texts)
                loss = loss + w_cos * cos + w_con * con
                logs.update(sa_cos=cos, sa_contrastive=con)
        return ObjectiveOutput(loss=loss, logs={k: v.detach() for k, v in logs.items()},
                               counts=counts)

    def semantic_alignment(
        self, audio_states: list[torch.Tensor], token_valid: torch.Tensor,
        texts: list[str | None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The aligned layers' outputs on the audio sequence ([B, N, H] each, ``sa_layers``
        order), its token mask [B, N] and the transcripts -> (mean 1 - cos, contrastive loss), averaged over the aligned layers
        and the items with a transcript. In training the text vectors then join the bank."""
        keep = [i for i, text in enumerate(texts) if text and text.strip()]
        device = token_valid.device
        enc = self.tokenizer(
            [texts[i] for i in keep], padding=True, truncation=True,
            max_length=self.cfg.max_text_tokens, return_tensors="pt",
        ).to(device)
        # The text side is the fixed target: paper 4.2 keeps the audio branch from moving it.
        with torch.no_grad(), self._layer_outputs() as text_states:
            self.llm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        rows = torch.tensor(keep, device=device)
        audio_last = token_valid.sum(1)[rows] - 1
        text_last = enc.attention_mask.sum(1) - 1
        n = torch.arange(len(keep), device=device)
        audio = torch.stack([s[rows, audio_last] for s in audio_states]).float()
        text = torch.stack([s[n, text_last] for s in text_states]).float()
        audio, text = F.normalize(audio, dim=-1), F.normalize(text, dim=-1)  # [L, n, H]

        positive = (audio * text).sum(-1, keepdim=True)  # [L, n, 1]
        negative = audio @ self.bank.vectors().transpose(1, 2)  # [L, n, m]
        scores = torch.cat([positive, negative], -1).flatten(0, 1) * self.cfg.contrastive_scale
        contrastive = F.cross_entropy(
            scores, scores.new_zeros(scores.shape[0], dtype=torch.long),
            label_smoothing=self.cfg.label_smoothing,
        )
        if self.training:
            self.bank.push(text)
        return (1 - positive).mean(), contrastive
