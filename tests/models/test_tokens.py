import pytest
import torch

from l3se.models.tokens import BOS, PAD, TokenLayout


def test_frame_major_order_on_a_hand_made_example():
    t = TokenLayout(n_codebooks=2, codebook_size=3)
    assert (t.n_specials, t.vocab_size) == (2, 8)
    codes = torch.tensor([[[0, 1, 2], [2, 0, 1]]])  # [B=1, Q=2, T=3]
    # f0c0, f0c1, f1c0, f1c1, f2c0, f2c1 with id = 2 + q*3 + k
    assert t.flatten(codes).tolist() == [[2, 7, 3, 5, 4, 6]]
    assert max(PAD, BOS) < t.n_specials


def test_round_trip_and_legal_ranges():
    torch.manual_seed(0)
    t = TokenLayout(n_codebooks=8, codebook_size=1024)
    codes = torch.randint(0, 1024, (3, 8, 17))
    ids = t.flatten(codes)
    assert ids.shape == (3, 8 * 17)
    assert torch.equal(t.unflatten(ids), codes)
    for pos in range(ids.shape[1]):
        start, stop = t.legal_range(pos)
        assert t.codebook_of(pos) == pos % 8
        assert bool(((ids[:, pos] >= start) & (ids[:, pos] < stop)).all())
    assert t.legal_range(9) == (2 + 1024, 2 + 2048)


def test_shape_errors():
    t = TokenLayout(n_codebooks=4, codebook_size=16)
    with pytest.raises(ValueError, match="4 codebooks"):
        t.flatten(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="whole number"):
        t.unflatten(torch.zeros(1, 7, dtype=torch.long))
