import torch
from torch.utils.data import DataLoader

from data_sim.dataset import DataConfig, MixtureDataset, build_dataset, collate
from data_sim.mixer import MixConfig
from data_sim.sources import load_source, read_rir_folder


def make(corpus, seed=0, **kw):
    return MixtureDataset(
        load_source(corpus / "speech.jsonl"), load_source(corpus / "noise"),
        read_rir_folder(corpus / "rir"), MixConfig(segment_seconds=2.0, **kw), seed=seed,
        length=12,
    )


def test_deterministic_given_seed_epoch_index(corpus):
    a, b = make(corpus), make(corpus)
    for i in (0, 5, 11):
        assert torch.equal(a[i]["noisy"], b[i]["noisy"])
        assert a[i]["meta"] == b[i]["meta"]
    c = make(corpus, seed=1)
    assert not torch.equal(a[3]["noisy"], c[3]["noisy"])
    b.set_epoch(1)
    assert not torch.equal(a[3]["noisy"], b[3]["noisy"])  # a new epoch is a new draw


def test_workers_do_not_repeat_randomness(corpus):
    ds = make(corpus)
    serial = [ds[i] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    parallel = [x for batch in loader for x in batch["noisy"]]
    assert all(torch.equal(s["noisy"], p) for s, p in zip(serial, parallel))
    # Same utterance, different index: different crop/noise/SNR (no cloned worker RNG).
    assert serial[0]["meta"]["id"] == serial[6]["meta"]["id"]
    assert not torch.equal(serial[0]["noisy"], serial[6]["noisy"])
    snrs = [s["meta"]["snr_db"] for s in serial]
    assert len(set(snrs)) == len(snrs)


def test_items_and_collate(corpus):
    ds = make(corpus)
    item = ds[0]
    assert item["noisy"].shape == item["clean"].shape == (32000,)
    assert item["meta"]["text"] is None  # cropped: the transcript no longer applies
    whole = MixtureDataset(load_source(corpus / "speech.jsonl"), load_source(corpus / "noise"),
                           [], MixConfig(segment_seconds=None, p_reverb=0.0))
    batch = collate([whole[0], whole[3]])
    assert batch["noisy"].shape == (2, 16000 * 3 + 8000 * 3)
    assert batch["lengths"].tolist() == [48000, 72000]
    assert batch["noisy"][0, 48000:].abs().sum() == 0  # padding
    assert batch["meta"][1]["text"] == "HELLO WORLD NUMBER 3"


def test_build_dataset_from_config(corpus):
    cfg = DataConfig(speech=str(corpus / "speech"), noise=str(corpus / "noise"),
                     rir=str(corpus / "rir"), epoch_size=4)
    ds = build_dataset(cfg)
    assert len(ds) == 4 and len(ds.mixer.rirs) == 3
    for i in range(4):  # 4 s crops; shorter utterances whole
        expect = round(min(4.0, ds.speech[i].duration) * 16000)
        assert ds[i]["noisy"].shape == (expect,)
