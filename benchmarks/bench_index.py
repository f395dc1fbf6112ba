"""Start-up cost of a corpus per rank: l3se's memory-mapped ``CorpusIndex`` against the naive
list of ``AudioItem`` dataclasses read from a JSONL manifest, on the same synthetic rows.

The rows look like Emilia's: an id, a ~60-character transcript, a speaker, a language (en or
zh), a duration of 1-30 s, a DNSMOS score, and a member's place in one of ``rows / 1000`` tar
shards. Each side runs what a training rank runs at start-up (``load_source`` then
``select_speech`` keeping English utterances of at most 20 s) in a fresh Python process, after
its imports, and reports the wall time and the growth of the process's resident memory (RSS,
which counts the index's mapped pages it touched as well as heap). Repeats alternate the
sides; numbers are medians. Both sides read files the writer has just left in the page cache.

    .venv/bin/python benchmarks/bench_index.py [--rows 1000000] [--repeats 3] [--dir DIR]

The baseline builds its items as ``read_jsonl`` does, without checking that each named file
exists (the synthetic shards do not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_sim.dataset import DataConfig, select_speech
from data_sim.index import NUMERIC, write_columns
from data_sim.sources import AudioItem, jsonl_rows, load_source

SHARD_ROWS = 1000
WORDS = ["the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as", "by",
         "at", "from", "his", "her", "they", "have", "one", "speech", "noise", "model", "voice",
         "signal", "clean"]
SELECT = DataConfig(languages=["en"], max_seconds=20.0)


def synthetic(rows: int, folder: Path) -> tuple[Path, Path]:
    """Write the same ``rows`` rows as an index folder and as a JSONL manifest."""
    rng = np.random.default_rng(0)
    shard = np.arange(rows) // SHARD_ROWS
    within = np.arange(rows) % SHARD_ROWS
    duration = rng.uniform(1.0, 30.0, rows).astype(np.float32)
    size = (duration * 6000).astype(np.int64)  # ~48 kbit/s MP3
    # Members back to back, each after 1 KiB of tar headers (its own and its .json's).
    ends = np.cumsum(size + 1024)
    offset = ends - size - np.concatenate([[0], ends])[shard * SHARD_ROWS]
    language = (rng.random(rows) < 0.5).astype(np.int16)  # 0 en, 1 zh
    dnsmos = rng.uniform(2.5, 4.0, rows).astype(np.float32)
    words = rng.integers(len(WORDS), size=(rows, 12))
    ids = [f"EN_B{s:06d}_S{w // 20:05d}_W{w:06d}" for s, w in zip(shard.tolist(), within.tolist())]
    speakers = [i[:17] for i in ids]
    texts = [" ".join(WORDS[w] for w in row)[:60] for row in words.tolist()]
    files = [str(folder / "shards" / f"EN-B{s:06d}.tar") for s in range(shard[-1] + 1)]
    numeric = {"duration": duration, "sample_rate": np.full(rows, 24000, np.int32),
               "shard": shard.astype(np.int32), "offset": offset, "size": size,
               "dnsmos": dnsmos, "language": language}
    assert set(numeric) == set(NUMERIC)
    write_columns(folder / "index", numeric, {"id": ids, "text": texts, "speaker": speakers},
                  files, ["en", "zh"])
    names = ["en", "zh"]
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as f:
        for r in range(rows):
            f.write(json.dumps({
                "id": ids[r], "path": files[shard[r]], "duration": float(duration[r]),
                "sample_rate": 24000, "text": texts[r], "speaker": speakers[r],
                "language": names[language[r]], "dnsmos": float(dnsmos[r]),
                "byte_offset": int(offset[r]), "byte_size": int(size[r]),
            }, ensure_ascii=False) + "\n")
    return folder / "index", folder / "manifest.jsonl"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def load_list(manifest: Path) -> list[AudioItem]:
    fields = set(AudioItem.__dataclass_fields__)
    return [AudioItem(**{k: v for k, v in row.items() if k in fields})
            for _, row in jsonl_rows(manifest)]


def measure(kind: str, path: Path) -> dict:
    """Run in a fresh process: load and select one side's rows."""
    before = rss_mb()
    start = time.perf_counter()
    items = load_source(path) if kind == "index" else load_list(path)
    kept = select_speech(items, SELECT)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_mb": rss_mb() - before, "rows": len(items),
            "kept": len(kept)}


def run_fresh(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default 1M)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per side")
    ap.add_argument("--dir", type=Path, help="where to write the rows (default: a temp folder)")
    ap.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = time.perf_counter()
        index, manifest = synthetic(args.rows, Path(tmp))
        print(f"wrote {args.rows} rows as an index and a JSONL manifest in "
              f"{time.perf_counter() - start:.1f} s")
        sides = {"list of AudioItem from JSONL": ("list", manifest),
                 "CorpusIndex (memory-mapped)": ("index", index)}
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, (kind, path) in sides.items():
                results[name].append(run_fresh(kind, path))
    print(f"load + select {SELECT.languages} <= {SELECT.max_seconds:g} s, fresh process each, "
          f"median of {args.repeats}")
    print(f"{'':30s} {'rows':>9s} {'kept':>9s} {'load s':>8s} {'RSS MB':>8s}")
    medians = {}
    for name, rs in results.items():
        t = statistics.median(r["seconds"] for r in rs)
        m = statistics.median(r["rss_mb"] for r in rs)
        medians[name] = (t, m)
        print(f"{name:30s} {rs[0]['rows']:9d} {rs[0]['kept']:9d} {t:8.2f} {m:8.1f}")
    (t_list, m_list), (t_index, m_index) = medians.values()
    print(f"ratio list / index: load time {t_list / t_index:.1f}x, memory "
          f"{m_list / max(m_index, 1e-3):.1f}x")


if __name__ == "__main__":
    main()
