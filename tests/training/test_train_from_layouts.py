"""One real training step of the lm stage from every layout a corpus is published in, named in
the config as a user names it: Emilia's tar shards indexed in place (whole, filtered, and read
in block order), its older ``.tar.gz`` release re-packed as l3se's shards, a LibriSpeech tree
read directly and sharded, a user's folder listed by ``l3se data manifest``; noise and RIRs from
a noise folder and OpenSLR's download, sharded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from data_sim.index import CorpusIndex
from data_sim.manifest import write_manifest
from data_sim.shards import index_shards, write_shards
from l3se.config import load_config
from l3se.models.codec import WavCodec
from l3se.models.weights import WEIGHTS_FILE
from l3se.training.distributed import BlockShuffleSampler, DistEnv, ResumableSampler
from l3se.training.engine import train_stage
from recipes.stages import STAGES, resolve_config
from tests.data_sim.corpora import (
    emilia_gz_batch,
    emilia_shards,
    librispeech_tree,
    noise_folder,
    openslr_rirs,
    user_folder,
)
from tests.models.tiny import tiny_codec_config
from tests.training.test_lm_recipe import tiny_ni_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

BATCH = 2
# lm's tiny config on 0.5 s crops, from the tiniest codec and NI-Encoder: the stage reads
# speech, noise and RIRs as every paper stage that simulates noisy input does.
TINY = [
    "lm.codebook_size=64", "lm.adapter_hidden=32", "data.mix.segment_seconds=0.5",
    "data.mix.p_reverb=1.0", "valid=null", "train.max_steps=1", f"train.batch_size={BATCH}",
    "train.num_workers=0", "train.progress=false", "optim.warmup_steps=1",
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> list[str]:
    """Overrides naming an exported tiny codec and NI-Encoder."""
    root = tmp_path_factory.mktemp("upstream")
    torch.manual_seed(0)
    WavCodec(tiny_codec_config()).save_pretrained(root / "codec")
    tiny_ni_encoder().save_pretrained(root / "ni")
    return [f"codec={root / 'codec'}", f"ni_encoder={root / 'ni'}"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, tuple[Path, set[str]]]:
    """Per layout, the source a config names and the ids its builder wrote; "noise" and "rir"
    are a noise folder and OpenSLR's RIRs (its isotropic noise left out), each sharded."""
    root = tmp_path_factory.mktemp("corpora")
    emilia = emilia_shards(root)
    index_shards([str(root / "Emilia" / "*" / "*.tar")], root / "emilia", progress=False)
    gz, old = emilia_gz_batch(root / "old")
    write_shards([str(gz)], root / "old_shards", progress=False)
    libri = librispeech_tree(root / "LibriSpeech" / "train-clean-100")
    write_shards([str(root / "LibriSpeech")], root / "libri_shards", shard_size=2,
                 progress=False)
    mine = user_folder(root / "my" / "clean")
    write_manifest(root / "my" / "clean", root / "my" / "clean.jsonl")
    noise_folder(root / "noise", n=3)
    write_shards([str(root / "noise")], root / "noise_shards", progress=False)
    write_shards([str(openslr_rirs(root, n=2))], root / "rir_shards", rirs=True, progress=False)
    rirs = {"simulated_rirs/smallroom/Room001/Room001-00001",
            "simulated_rirs/smallroom/Room001/Room001-00002",
            "real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla"}
    zh_scored = {uid for uid, (row, _) in emilia.items()
                 if row["language"] == "zh" and row["dnsmos"] >= 3.0}
    return {
        "emilia": (root / "emilia", set(emilia)),
        "emilia_zh_scored": (root / "emilia", zh_scored),
        "emilia_gz": (root / "old_shards", set(old)),
        "librispeech": (root / "LibriSpeech" / "train-clean-100", set(libri)),
        "librispeech_shards": (root / "libri_shards", set(libri)),
        "user_folder": (root / "my" / "clean.jsonl", set(mine)),
        "noise": (root / "noise_shards", {f"noise_{i}" for i in range(3)}),
        "rir": (root / "rir_shards", rirs),
    }


def one_step(corpora, upstream, out: Path, layout: str, *overrides: str
             ) -> tuple[list[dict], float]:
    """Train lm for one step on ``layout``'s source with the sharded noise and RIRs; the
    meta of the items the step read and its loss."""
    stage = STAGES["lm"]
    sources = [f"data.{key}={corpora[key][0]}" for key in ("noise", "rir")]
    cfg = load_config(stage.config_class, resolve_config(stage.folder, "tiny"),
                      [*TINY, *upstream, f"data.speech={corpora[layout][0]}", *sources,
                       f"train.output_dir={out}", *overrides])
    task = stage.recipe.build_task("lm", cfg)
    read, losses = [], []
    step = task.training_step

    def recording(batch, n):
        read.extend(batch["meta"])
        output = step(batch, n)
        losses.append(float(output.loss.detach()))
        return output

    task.training_step = recording
    train_stage(task, cfg, "lm")
    assert (out / "model" / "lm" / WEIGHTS_FILE).is_file()
    (loss,) = losses
    return read, loss


@pytest.mark.parametrize(("layout", "overrides"), [
    pytest.param("emilia", [], id="emilia"),
    # The paper configs' filters on the index: Emilia's language and DNSMOS labels.
    pytest.param("emilia_zh_scored", ["data.languages=[zh]", "data.min_dnsmos=3.0"],
                 id="emilia-filtered"),
    pytest.param("emilia_gz", [], id="emilia-tar.gz"),
    pytest.param("librispeech", [], id="librispeech"),
    pytest.param("librispeech_shards", [], id="librispeech-shards"),
    pytest.param("user_folder", [], id="user-folder"),
])
def test_one_step_from_each_layout(corpora, upstream, tmp_path, layout, overrides):
    read, loss = one_step(corpora, upstream, tmp_path / "run", layout, *overrides)
    assert math.isfinite(loss) and loss > 0
    assert len(read) == BATCH
    assert {m["id"] for m in read} <= corpora[layout][1]
    # Every item was read as indexed (none skipped for a bad byte range) and mixed with a noise
    # and an RIR from their shards.
    assert all(m["skipped"] == [] for m in read)
    assert {m["noise_id"] for m in read} <= corpora["noise"][1]
    assert {m["rir_id"] for m in read} <= corpora["rir"][1]


def test_one_step_in_block_order_reads_one_shard(corpora, upstream, tmp_path):
    """Emilia's index in block order: the step's batch is the first of the block sampler's
    order over the index's shards (3 items a shard, a window of one shard)."""
    read, loss = one_step(corpora, upstream, tmp_path / "run", "emilia", "data.order=block",
                          "data.shuffle_window=3", "train.seed=1")
    index = CorpusIndex(corpora["emilia"][0])
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    block = list(BlockShuffleSampler(index.shard_ids, env, seed=1, window=3))[:BATCH]
    shuffled = list(ResumableSampler(index, env, seed=1))[:BATCH]
    assert math.isfinite(loss)
    assert [m["id"] for m in read] == [index[i].id for i in block]
    assert len(set(index.shard_ids[block].tolist())) == 1
    # Not what the default order would have read.
    assert [m["id"] for m in read] != [index[i].id for i in shuffled]
