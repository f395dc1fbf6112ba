import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index.py"


def test_the_index_benchmark_compares_equal_selections_and_prints_its_ratio(capsys):
    spec = importlib.util.spec_from_file_location("bench_index", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--rows", "2000", "--repeats", "1"])
    out = capsys.readouterr().out
    print(out)
    sides = re.findall(r"^(list of AudioItem from JSONL|CorpusIndex \(memory-mapped\)) +(\d+) +"
                       r"(\d+) +([\d.]+) +([\d.]+)$", out, re.MULTILINE)
    assert len(sides) == 2
    # Both sides hold every row and keep the same ones (English, at most 20 s: about a third).
    (_, rows, kept, *_), (_, rows_i, kept_i, *_) = sides
    assert int(rows) == int(rows_i) == 2000 and kept == kept_i and 500 < int(kept) < 800
    ratio = out.splitlines()[-1]
    assert re.fullmatch(r"ratio list / index: load time [\d.]+x, memory [\d.]+x", ratio)
