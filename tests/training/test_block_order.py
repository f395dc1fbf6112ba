"""The block-shuffle reading order: shards in a random order per epoch, contiguous per rank,
shuffled within a window; every sample once per epoch, equal shares, exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from data_sim.dataset import MixtureDataset, collate
from data_sim.mixer import MixConfig
from data_sim.sources import AudioItem
from l3se.config import ConfigError
from l3se.training import engine
from l3se.training.distributed import (
    BlockShuffleSampler,
    DistEnv,
    ResumableSampler,
    build_sampler,
)
from l3se.training.engine import Trainer
from l3se.training.options import OptimConfig, TrainConfig
from tests.training.synthetic import SyntheticSpeech
from tests.training.test_engine import make_trainer

# 12 shards of uneven sizes, 240 items: 2 ranks x 2 workers x batches of 4 divide it.
SIZES = [30, 10, 25, 15, 20, 20, 5, 35, 20, 25, 15, 20]
GROUPS = np.repeat(np.arange(len(SIZES)), SIZES)


def env(rank: int, world: int = 2) -> DistEnv:
    return DistEnv(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))


def block(rank=0, world=2, seed=0, epoch=0, window=8, groups=GROUPS) -> list[int]:
    sampler = BlockShuffleSampler(groups, env(rank, world), seed, window)
    sampler.set_epoch(epoch)
    return list(sampler)


def switches(indices: list[int], groups=GROUPS) -> int:
    """How often consecutive reads change shard."""
    g = groups[indices]
    return int(np.count_nonzero(g[1:] != g[:-1]))


class Indices(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def test_two_ranks_with_two_workers_each_read_every_sample_once():
    seen = []
    for rank in range(2):
        sampler = BlockShuffleSampler(GROUPS, env(rank), seed=3, window=8)
        sampler.set_epoch(1)
        loader = DataLoader(Indices(len(GROUPS)), batch_size=4, sampler=sampler, num_workers=2,
                            drop_last=True)
        mine = [int(i) for batch in loader for i in batch]
        assert len(mine) == len(GROUPS) // 2
        # The workers' batches come back in the sampler's order.
        assert mine == list(sampler)
        seen += mine
    assert sorted(seen) == list(range(len(GROUPS)))


def test_order_changes_with_epoch_and_seed_and_is_a_function_of_them():
    base = block()
    assert block() == base
    assert block(epoch=1) != base
    assert block(seed=1) != base
    assert sorted(block(epoch=1) + block(rank=1, epoch=1)) == list(range(len(GROUPS)))


def test_reads_stay_within_shards():
    shuffled = ResumableSampler(Indices(len(GROUPS)), env(0), seed=0)
    # Window 1: the rank's reads change shard only where its run of shards does.
    for rank in range(2):
        mine = block(rank=rank, window=1)
        assert switches(mine) == len(set(GROUPS[mine].tolist())) - 1
    assert switches(block(window=8)) < switches(list(shuffled)) / 3


def test_window_shuffles_only_within_itself():
    window = 8
    mine = block(window=window)
    unshuffled = block(window=1)
    assert mine != unshuffled
    for w in range(0, len(mine), window):
        assert sorted(mine[w : w + window]) == sorted(unshuffled[w : w + window])


def test_ranks_get_equal_shares_and_the_dropped_tail_moves_between_epochs():
    groups = np.append(GROUPS, 99)  # 241 items: one left out per epoch
    dropped = set()
    for epoch in range(6):
        shares = [block(rank=r, epoch=epoch, groups=groups) for r in range(2)]
        assert [len(s) for s in shares] == [120, 120]
        dropped |= set(range(241)) - set(shares[0] + shares[1])
    assert len(dropped) > 1


def test_an_interrupted_epoch_resumes_with_exactly_the_rest():
    for rank in range(2):
        full = block(rank=rank, epoch=2)
        resumed = BlockShuffleSampler(GROUPS, env(rank), seed=0, window=8)
        resumed.set_position(2, 37)
        assert len(resumed) == len(full) - 37
        assert full[:37] + list(resumed) == full


def test_a_dataset_without_shards_is_read_in_runs_of_a_window():
    sampler = build_sampler(Indices(100), env(0, world=1), seed=0, order="block", window=10)
    assert isinstance(sampler, BlockShuffleSampler)
    order = list(sampler)
    assert sorted(order) == list(range(100))
    runs = np.arange(100) // 10
    assert switches(order, runs) == 9


def test_a_speech_index_with_shard_ids_names_each_items_shard():
    class ShardedSpeech(list):
        shard_ids = np.array([0, 0, 1, 2, 2])

    speech = ShardedSpeech(AudioItem(id=str(i), path=f"{i}.wav") for i in range(5))
    clean = MixConfig(p_noise=0.0, p_reverb=0.0)
    dataset = MixtureDataset(speech, cfg=clean, length=12)
    assert dataset.read_groups().tolist() == [0, 0, 1, 2, 2, 0, 0, 1, 2, 2, 0, 0]
    assert MixtureDataset(list(speech), cfg=clean).read_groups() is None
    sampler = build_sampler(dataset, env(0, world=1), seed=0, order="block", window=1)
    assert switches(list(sampler), dataset.read_groups()) == 2


def test_unknown_order_and_bad_window_are_config_errors():
    with pytest.raises(ConfigError, match="data.order must be one of shuffle, block"):
        build_sampler(Indices(8), env(0, 1), 0, order="blocks")
    with pytest.raises(ConfigError, match="data.shuffle_window must be at least 1"):
        build_sampler(Indices(8), env(0, 1), 0, order="block", window=0)


class ShardedSynthetic(SyntheticSpeech):
    """Items in shards of 3."""

    def read_groups(self) -> np.ndarray:
        return np.arange(self.n) // 3


def block_trainer(out, max_steps=8, order="block") -> tuple[Trainer, list[str]]:
    """A tiny codec trainer on 12 items, 6 steps an epoch; the item ids its steps read."""
    trainer = make_trainer(out, max_steps=max_steps)
    trainer = Trainer(trainer.task, trainer.cfg, OptimConfig(lr=1e-3, warmup_steps=2),
                      ShardedSynthetic(n=12, seconds=0.16), collate, order=order,
                      shuffle_window=2)
    seen = []
    training_step = trainer.task.training_step

    def recording(batch, step):
        seen.extend(m["id"] for m in batch["meta"])
        return training_step(batch, step)

    trainer.task.training_step = recording
    return trainer, seen


def test_training_in_block_order_resumes_to_the_same_items(tmp_path):
    full, full_ids = block_trainer(tmp_path / "full")
    assert isinstance(full.sampler, BlockShuffleSampler)
    full.fit()
    # Stopped mid-epoch, resumed by a new trainer from the checkpoint, then into epoch 2.
    first, split_ids = block_trainer(tmp_path / "split")
    first.fit(stop_at=3)
    second, more = block_trainer(tmp_path / "split")
    second.fit()
    assert len(full_ids) == 16 and split_ids + more == full_ids
    assert sorted(full_ids[:12], key=int) == [str(i) for i in range(12)]
    shuffled, shuffled_ids = block_trainer(tmp_path / "shuffled", order="shuffle")
    shuffled.fit()
    assert shuffled_ids != full_ids


def test_train_stage_passes_the_data_order_to_the_trainer(monkeypatch, tmp_path):
    from recipes.train_codec import CodecRecipeConfig

    made = {}

    class Recorder:
        def __init__(self, *args, **kwargs):
            made.update(kwargs)

        def fit(self, stop_at=None):
            return 0

    monkeypatch.setattr(engine, "Trainer", Recorder)
    monkeypatch.setattr("data_sim.dataset.build_dataset", lambda cfg: SyntheticSpeech(n=4))
    cfg = CodecRecipeConfig(valid=None, train=TrainConfig(output_dir=str(tmp_path)))
    cfg.data.order, cfg.data.shuffle_window = "block", 64
    engine.train_stage(make_trainer(tmp_path / "t").task, cfg, "codec-1")
    assert made["order"] == "block" and made["shuffle_window"] == 64


def test_an_indexed_corpus_is_read_shard_by_shard(tmp_path):
    from data_sim.dataset import DataConfig, build_dataset
    from data_sim.shards import index_shards
    from tests.data_sim.corpora import emilia_shards

    emilia_shards(tmp_path, langs=("EN",), shards=3, per_shard=4)
    index_shards([str(tmp_path / "Emilia" / "EN" / "*.tar")], tmp_path / "idx", progress=False)
    dataset = build_dataset(DataConfig(speech=str(tmp_path / "idx"), noise=None, rir=None,
                                       mix=MixConfig(p_noise=0.0, p_reverb=0.0), epoch_size=24))
    groups = dataset.read_groups()
    ids = [dataset.speech[i % len(dataset.speech)].id for i in range(24)]
    # Emilia ids name their shard (EN_B00000k_...): the groups are the shards.
    assert len(set(groups.tolist())) == 3
    assert all((g == h) == (a.split("_")[1] == b.split("_")[1])
               for g, a in zip(groups, ids) for h, b in zip(groups, ids))
    sampler = build_sampler(dataset, env(0, world=1), seed=0, order="block", window=1)
    assert switches(list(sampler), groups) == 2
