"""The paper configs' data: evaluation material is out of training and validation by
construction, and the LM trains on inputs as long as those it is evaluated on."""

from pathlib import Path, PurePosixPath

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
SOURCES = ("speech", "noise", "rir")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def training_sources() -> list[tuple[str, str]]:
    """(where, path) for every source a paper config trains or validates on."""
    found = []
    for path in sorted(CONFIGS.glob("*/paper*.yaml")):
        folder = path.parent.name
        if folder == "evalset":
            continue
        cfg = load(path)
        # data/paper.yaml is one data section; a stage config has data and valid sections.
        sections = {"": cfg} if folder == "data" else {f"{k}.": cfg.get(k) for k in ("data", "valid")}
        for prefix, section in sections.items():
            found += [(f"{folder}/{path.name}: {prefix}{key}", section[key])
                      for key in SOURCES if section and section.get(key)]
    return found


def nested(a: str, b: str) -> bool:
    """The same file or folder, or one inside the other (a folder source is read recursively)."""
    a, b = PurePosixPath(a), PurePosixPath(b)
    return a == b or a in b.parents or b in a.parents


def test_paper_training_never_reads_evaluation_material():
    evalset = load(CONFIGS / "evalset" / "paper.yaml")
    held_out = [evalset[key] for key in SOURCES]
    used = training_sources()
    assert {where.split(":")[0] for where, _ in used} >= {
        "data/paper.yaml", "codec1/paper.yaml", "codec2/paper.yaml", "s2t/paper.yaml",
        "distill/paper.yaml", "lm/paper.yaml",
    }
    clashes = [f"{where} = {src} holds {ev}" for where, src in used for ev in held_out
               if nested(src, ev)]
    assert not clashes, "\n".join(clashes)


def test_lm_trains_on_the_length_of_the_eval_clips():
    longest_eval = load(CONFIGS / "evalset" / "paper.yaml")["max_seconds"]
    lengths = {}
    for stage in ("lm", "distill"):
        for path in sorted((CONFIGS / stage).glob("paper*.yaml")):
            cfg = load(path)
            lengths[f"{stage}/{path.name}"] = {cfg[s]["mix"]["segment_seconds"]
                                               for s in ("data", "valid")}
    lengths["data/paper.yaml"] = {load(CONFIGS / "data" / "paper.yaml")["mix"]["segment_seconds"]}
    # One length: the NI-Encoder is distilled on the inputs the LM is trained on and decodes.
    (seconds,) = set().union(*lengths.values())
    assert seconds >= longest_eval, lengths
    # The exported model decodes in chunks of its trained length.
    assert load(CONFIGS / "lm" / "paper.yaml")["enhancer"].get("chunk_seconds") is None


def test_paper_stages_read_emilia_through_one_index():
    """Emilia is read as released, through one index of its tar shards; only codec-3 keeps a
    manifest of its own, for the word timings an index does not hold."""
    readers: dict[str, set[str]] = {}
    for where, src in training_sources():
        if "/emilia/" in src:
            readers.setdefault(src, set()).add(where.split("/")[0])
    assert readers == {
        "/data/emilia/index": {"data", "codec1", "codec2", "s2t", "distill", "lm"},
        "/data/emilia/codec_train_words.jsonl": {"codec3"},
    }
    # codec-2 continues codec-1 on the same DNSMOS-filtered subset.
    codec = [load(CONFIGS / f"codec{k}" / "paper.yaml")["data"] for k in (1, 2)]
    assert codec[0]["min_dnsmos"] == codec[1]["min_dnsmos"] is not None
