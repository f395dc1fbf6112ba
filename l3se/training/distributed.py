"""Data parallelism under ``torchrun``: process-group set-up from its environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), gradient averaging and the samplers
(a global shuffle, or a block shuffle that reads shards sequentially; ``build_sampler``).

Gradients are averaged with one coalesced all-reduce per optimizer step instead of wrapping
modules in ``DistributedDataParallel``: GAN stages run the discriminator inside the generator's
loss and alternate two optimizers, which DDP's reducer (one forward per backward, hooks fixed at
wrap time) cannot express cleanly. The result is the same averaged gradient.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

from l3se.config import ConfigError

# All-reduce gradients in chunks of this many elements: bounds the flat buffer's extra memory.
BUCKET_ELEMENTS = 1 << 25
# The training set's reading orders (``DataConfig.order``).
ORDERS = ("shuffle", "block")


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun"
            )
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier()


def broadcast_module(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    for t in module.state_dict().values():
        dist.broadcast(t, src=0)


def average_gradients(params: Iterable[nn.Parameter], world_size: int) -> None:
    """All-reduce the mean gradient. A parameter that some rank gave a gradient counts as a zero
    gradient on the others, so ranks that skipped a branch stay in step; one that no rank gave a
    gradient keeps none, so the optimizer leaves it alone (no weight decay, no moment update) as
    it would on one process."""
    params = list(params)
    if not params:
        return
    # On the parameters' device: NCCL reduces CUDA tensors only.
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(present)
    grads = []
    for p, anywhere in zip(params, present.tolist()):
        if not anywhere:
            p.grad = None
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for dtype in {g.dtype for g in grads}:
        same = [g for g in grads if g.dtype == dtype]
        for bucket in _buckets(same):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def average_scalars(
    sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], env: DistEnv
) -> dict[str, float]:
    """Count-weighted mean of each logged scalar over ranks: ``sums[k]`` is this rank's
    count-weighted sum, ``counts[k]`` its count. Ranks may hold different keys (a branch only
    some batches take); a key no rank counted is left out."""
    keys = sorted(sums)
    if env.world_size > 1:
        gathered: list[list[str] | None] = [None] * env.world_size
        dist.all_gather_object(gathered, keys)
        keys = sorted(set().union(*gathered))
    if not keys:
        return {}
    zero = torch.zeros(())
    stacked = torch.stack([
        torch.stack([sums.get(k, zero).float() for k in keys]),
        torch.stack([counts.get(k, zero).float() for k in keys]),
    ]).to(env.device)
    if env.world_size > 1:
        dist.all_reduce(stacked)
    totals, n = stacked.tolist()
    return {k: s / c for k, s, c in zip(keys, totals, n) if c > 0}


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and size + t.numel() > BUCKET_ELEMENTS:
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, this rank's share) that can start mid-epoch, so a
    resumed run reads exactly the examples an uninterrupted one would."""

    def __init__(self, dataset: Dataset, env: DistEnv, seed: int):
        super().__init__(
            dataset,
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


class BlockShuffleSampler(Sampler[int]):
    """This rank's share of an epoch read block by block, for storage where seeks are dear
    (tar shards on network or spinning disks). Exactly as resumable as ``ResumableSampler``.

    ``groups[i]`` (int, one per dataset index) names the block, e.g. the tar shard, that item
    ``i`` is read from. Each epoch the blocks are put in a random order and concatenated, each
    block's items kept in index order; rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal,
    contiguous slices of that stream (so a run of whole blocks, cut at most at its two ends)
    and shuffles it within consecutive windows of ``window`` items. A batch therefore mixes
    items from about ``window`` neighbours in a block instead of from the whole corpus: the
    price of sequential reads.

    Every rank gets ``len(groups) // W`` items, as ``DistributedSampler(drop_last=True)``: the
    last ``len(groups) % W`` items of the epoch's stream are left out, different ones each
    epoch since the block order changes. The order is a pure function of (seed, epoch, W,
    rank), so ``set_position`` resumes mid-epoch exactly.
    """

    def __init__(self, groups: np.ndarray, env: DistEnv, seed: int, window: int):
        if window < 1:
            raise ConfigError(f"data.shuffle_window must be at least 1, got {window}")
        groups = np.asarray(groups)
        self.num_replicas, self.rank = env.world_size, env.rank
        self.seed, self.window = seed, window
        self.num_samples = len(groups) // self.num_replicas
        # Dataset indices sorted by block (stable: index order within a block), and where each
        # block's run starts in that list.
        self._members = np.argsort(groups, kind="stable")
        _, starts = np.unique(groups[self._members], return_index=True)
        self._starts = starts
        self._sizes = np.diff(np.append(starts, len(groups)))
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch = epoch
        self.start = start

    def indices(self) -> np.ndarray:
        """[num_samples] dataset indices: this rank's whole epoch, in reading order."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self._starts))
        sizes = self._sizes[order]
        # Position p of the stream is item (p - first position of its block) of that block.
        first = np.cumsum(sizes) - sizes
        lo = self.rank * self.num_samples
        pos = np.arange(lo, lo + self.num_samples)
        block = np.searchsorted(first, pos, side="right") - 1
        mine = self._members[self._starts[order[block]] + pos - first[block]]
        rng = np.random.default_rng([self.seed, self.epoch, self.num_replicas, self.rank])
        within = np.lexsort((rng.random(len(mine)), np.arange(len(mine)) // self.window))
        return mine[within]

    def __iter__(self):
        return iter(self.indices()[self.start:].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_sampler(dataset: Dataset, env: DistEnv, seed: int, order: str = "shuffle",
                  window: int = 1000) -> ResumableSampler | BlockShuffleSampler:
    """The training sampler for ``order`` (``DataConfig.order``). Block order reads the blocks
    ``dataset.read_groups()`` names (the speech source's tar shards); a dataset without them
    (per-file sources) is read in runs of ``window`` consecutive indices instead, which keeps
    the order's resumability and equal shares but gains locality only where neighbouring
    indices are neighbouring files."""
    if order == "shuffle":
        return ResumableSampler(dataset, env, seed)
    if order != "block":
        raise ConfigError(f"data.order must be one of {', '.join(ORDERS)}, got {order!r}")
    groups = dataset.read_groups() if hasattr(dataset, "read_groups") else None
    if groups is None:
        groups = np.arange(len(dataset)) // max(window, 1)
    return BlockShuffleSampler(groups, env, seed, window)
