"""The SpeechLM machinery lets an LM follow its prefix: a tiny LM trained for seconds on 4
utterances whose prefix names their codes decodes each utterance's own codes, and swaps outputs when
the prefixes are swapped, under greedy decoding and teacher forcing alike. The first three checks
fail for an LM that ignores its prefix and predicts codes from the token history alone, the failure
of l3se's first shipped model. What they cannot say is whether a trained model listens: that is
``tests/enhance/test_default_listens.py`` for the bundled one and ``l3se diagnose`` for any."""

import pytest
import torch

from l3se.decoding import DecodeConfig, generate
from l3se.diagnostics import prefix_reliance
from tests.models.test_lm import tiny_lm

pytestmark = pytest.mark.usefixtures("one_thread")

N_UTTERANCES, FRAMES = 4, 6


def distinct_utterances(q: int, k: int, dim: int = 12):
    """4 utterances of random codes [4, Q, T]; each prefix frame is a fixed random projection of
    its frame's codes plus noise, so the prefix says what to decode but the history cannot."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (N_UTTERANCES, q, FRAMES), generator=g)
    table = torch.randn(q, k, dim, generator=g)
    features = table[torch.arange(q)[None, :, None], codes].sum(1)  # [4, T, dim]
    features = features + 0.1 * torch.randn(features.shape, generator=g)
    return codes, features


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic", n_codebooks=4, codebook_size=16, frame_positions=True)
    codes, features = distinct_utterances(4, 16)
    lengths = torch.full((N_UTTERANCES,), FRAMES)
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(100):
        loss = lm(lm.prefix(features), lengths, codes).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lm.eval(), codes, features, lengths


def test_each_prefix_decodes_to_its_own_codes(trained):
    lm, codes, features, lengths = trained
    with torch.no_grad():
        decoded = generate(lm, lm.prefix(features), lengths, DecodeConfig())
    per_item = (decoded == codes).float().mean((1, 2))
    assert bool((per_item >= 0.9).all()), per_item
    # Distinct inputs, distinct outputs: a deaf LM would decode one sequence for all four.
    for i in range(N_UTTERANCES):
        for j in range(i + 1, N_UTTERANCES):
            assert (decoded[i] == decoded[j]).float().mean() < 0.5


def test_swapping_prefixes_swaps_outputs(trained):
    lm, codes, features, lengths = trained
    order = torch.tensor([2, 3, 0, 1])
    with torch.no_grad():
        swapped = generate(lm, lm.prefix(features[order]), lengths, DecodeConfig())
    # Against the true codes, not against the first decode: a deaf LM decodes one sequence for
    # every row, which a swap maps onto itself.
    assert (swapped == codes[order]).float().mean() >= 0.9
    assert len({tuple(row.flatten().tolist()) for row in swapped}) == N_UTTERANCES


def test_teacher_forced_loss_needs_the_true_prefix(trained):
    lm, codes, features, lengths = trained
    with torch.no_grad():
        report = prefix_reliance(lm, lm.prefix(features), lengths, codes)
    # Once a few true tokens are in, the history of 4 utterances names the utterance, so a
    # borrowed prefix costs mostly the first frame: a ratio, not a fixed gap. A deaf LM scores
    # the same with any prefix (ratio 1).
    assert report["true"]["loss"] < 0.05 and report["true"]["accuracy"] == 1.0
    for other in ("shuffled", "zeros"):
        assert report[other]["loss"] > max(0.3, 20 * report["true"]["loss"]), report
        assert report[other]["accuracy"] < 0.95, report


def test_frame_positions_share_the_prefix_frame_position():
    lm = tiny_lm("acoustic", n_codebooks=4, codebook_size=16, frame_positions=True)
    # Left-padded prefix of 3 frames with 2 real ones, bos, then 4 x 3 tokens.
    mask = torch.tensor([[0, 1, 1] + [1] * 13])
    pos = lm.position_ids(mask)[0].tolist()
    assert pos[:3] == [0, 0, 1] and pos[3] == 0
    assert pos[4:] == [0] * 4 + [1] * 4 + [2] * 4
    plain = tiny_lm("acoustic", n_codebooks=4, codebook_size=16).position_ids(mask)[0]
    assert plain.tolist() == [0, 0, 1] + list(range(2, 15))


@pytest.mark.parametrize("frame", [{"frame_positions": True},
                                   {"frame_positions": True, "frame_inputs": True}])
def test_greedy_decoding_matches_teacher_forcing(frame):
    torch.manual_seed(3)
    lm = tiny_lm("acoustic", n_codebooks=4, codebook_size=16, **frame).eval()
    if lm.frame_projection is not None:  # it starts at zero, a no-op
        torch.nn.init.normal_(lm.frame_projection.weight, std=0.1)
    prefix, lengths = torch.randn(3, 5, 64), torch.tensor([5, 3, 4])
    with torch.no_grad():
        codes = generate(lm, prefix, lengths, DecodeConfig())
        logits = lm(prefix, lengths, codes).logits  # [B, T, Q, K]
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(logits[b, :n].argmax(-1), codes[b, :, :n].T)


def test_frame_inputs_hand_each_token_its_own_prefix_frame():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic", n_codebooks=4, codebook_size=16, frame_inputs=True)
    # It starts as a no-op, so that the prefix does not drown the token embeddings.
    assert torch.equal(lm.frame_inputs(torch.ones(1, 5, 64), torch.randn(1, 2, 64)),
                       torch.ones(1, 5, 64))
    with torch.no_grad():
        lm.frame_projection.weight.copy_(torch.eye(64))
    prefix = torch.randn(2, 3, 64)
    x = torch.zeros(2, 13, 64)  # bos and the 12 tokens of 3 frames
    out = lm.frame_inputs(x, prefix)
    # bos and tokens 1-3 predict frame 0's tokens; the last token predicts nothing.
    assert torch.equal(out[:, :4], prefix[:, :1].expand(-1, 4, -1))
    assert torch.equal(out[:, 4:8], prefix[:, 1:2].expand(-1, 4, -1))
    assert torch.equal(out[:, 12], torch.zeros(2, 64))
    # One step in decoding: input 5 (token 5) predicts token 6, of frame 1.
    assert torch.equal(lm.frame_inputs(x[:, :1], prefix, 5)[:, 0], prefix[:, 1])
    off = tiny_lm("acoustic", n_codebooks=4, codebook_size=16)
    assert torch.equal(off.frame_inputs(x, prefix), x)


def test_history_noise_corrupts_what_the_lm_reads_in_training_only():
    torch.manual_seed(0)
    noisy = tiny_lm("acoustic", n_codebooks=4, codebook_size=16, history_noise=0.5)
    plain = tiny_lm("acoustic", n_codebooks=4, codebook_size=16)
    plain.load_state_dict(noisy.state_dict())
    codes = torch.randint(0, 16, (8, 4, 50))
    swapped = noisy.noisy_history(codes)
    # Half the entries are redrawn, and a redraw lands on another entry 15 times in 16.
    assert abs((swapped != codes).float().mean().item() - 0.5 * 15 / 16) < 0.03
    assert swapped.min() >= 0 and swapped.max() < 16
    prefix, lengths = torch.randn(8, 50, 64), torch.full((8,), 50)
    with torch.no_grad():
        for mode in (True, False):
            noisy.train(mode), plain.train(mode)
            same = torch.equal(noisy(prefix, lengths, codes).logits,
                               plain(prefix, lengths, codes).logits)
            # Training reads the corrupted history; evaluation and decoding the true one.
            assert same is not mode

