import importlib.util
import re
from pathlib import Path

from recipes.stages import PIPELINE

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def test_the_gpu_benchmark_runs_every_stage_and_decodes_in_its_cpu_mode(capsys):
    # The tiny configs through the same code as the paper-scale CUDA run, so that it cannot rot.
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--device", "cpu"])
    out = capsys.readouterr().out
    print(out)
    for stage in PIPELINE:
        row = re.search(rf"^{stage} +(\d+) x (\d+) x +([\d.]+) s +([\d.]+) +([\d.]+) +-$", out,
                        re.MULTILINE)
        assert row, stage
        assert float(row[4]) > 0 and float(row[5]) > 0
    decoded = re.findall(r"^ +(\d+) +(\d+) +(\d+) +([\d.]+) +-$", out, re.MULTILINE)
    assert [int(batch) for batch, *_ in decoded] == [1, 32]
    assert all(int(tokens) == 8 * 25 for _, tokens, _, _ in decoded)  # 2 s at 12.5 Hz x 8
