"""How long ``evaluate`` keeps a user waiting: today's defaults against the previous ones, on the
same eval set, in the same run.

- previous: one worker in this process and the previous default metric set, the offline one with
  open-vocabulary pocketsphinx WER/dWER (``--metrics offline --workers 1`` today);
- default: ``evaluate``'s defaults, the default metric set and one worker process per available
  core (one compute thread each).

The scenario of issue 26 is 48 files of about 2.7 s with 4 systems and 3 baselines
(``--files 48 --systems 4 --baselines dfn3,rnnoise,noisereduce``, about half an hour for the
previous defaults on 2 cores); the defaults below are a smaller case that runs in minutes. Each run
gets its own report folder (no shared cache) and prints what each metric cost per minute of audio;
the last lines are the ratio of their wall-clock times and of their CPU times (this process and
its finished worker processes): on a machine busy with other work the CPU ratio says what the
metric set saved, the wall ratio what the user waits for.

Material: flite sentences (slt voice) at 16 kHz with white noise at 5 dB. The systems are the
noisy input and copies of it at other gains (every metric does the full work on them); baselines
enhance the noisy files inside each run, as ``--baseline`` does.

    .venv/bin/python benchmarks/bench_evaluate.py [--files 6] [--systems 2] [--baselines noisereduce]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_sim.audio import load_audio, write_audio  # noqa: E402
from l3se.evaluation import evaluate  # noqa: E402
from l3se.evaluation.registry import OFFLINE  # noqa: E402
from l3se.evaluation.report import format_costs  # noqa: E402
from l3se.evaluation.runner import available_cores  # noqa: E402

# Short sentences: about 2-3 s each, like the eval files.
TEXTS = (
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the shore",
    "please call stella and ask her to come",
    "seven red apples fell from the tree",
)


def material(n: int, systems: int, folder: Path) -> tuple[Path, dict[str, str | None]]:
    """An eval-set manifest of ``n`` (clean, noisy, text) files under ``folder`` and the systems
    to score: the noisy input and ``systems - 1`` output folders."""
    rng = np.random.default_rng(0)
    rows = []
    gains = np.linspace(0.5, 0.9, max(systems - 1, 1))[: systems - 1]
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        raw = folder / f"{i}.raw.wav"
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(raw)], check=True,
                       capture_output=True)
        clean = load_audio(raw)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** 0.5)
        noisy = clean + noise
        row = {"id": str(i), "subset": "all", "clean": f"clean/{i}.wav", "noisy": f"noisy/{i}.wav",
               "snr_db": 5.0, "text": text}
        write_audio(folder / row["clean"], clean)
        write_audio(folder / row["noisy"], noisy)
        for k, gain in enumerate(gains):
            write_audio(folder / f"system{k + 1}" / f"{i}.wav", gain * noisy)
        rows.append(row)
    manifest = folder / "evalset.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = {"noisy": None} | {f"system{k + 1}": str(folder / f"system{k + 1}")
                               for k in range(len(gains))}
    return manifest, names


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the worker pool's)."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--systems", type=int, default=2, help="the noisy input and N-1 copies")
    ap.add_argument("--baselines", default="noisereduce",
                    help="comma list of baselines enhanced and scored in each run ('' for none)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    baselines = [b for b in args.baselines.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        manifest, systems = material(args.files, args.systems, Path(tmp))
        seconds = sum(len(load_audio(Path(tmp) / json.loads(line)["noisy"])) / 16000
                      for line in manifest.read_text().splitlines())
        print(f"{args.files} files, {seconds:.1f} s of audio, {len(systems)} systems + "
              f"{len(baselines)} baselines ({','.join(baselines) or 'none'}); "
              f"{available_cores()} cores, machine shared with other work")
        runs = {
            "previous (offline metrics, 1 worker)": {"metrics": ",".join(OFFLINE), "workers": 1},
            "default": {},
        }
        wall, cpu = {}, {}
        for i, (name, kwargs) in enumerate(runs.items()):
            start, start_cpu = time.perf_counter(), cpu_seconds()
            results = evaluate(manifest, systems, out_dir=Path(tmp) / f"report{i}", progress=False,
                               baselines=baselines, **kwargs)
            wall[name], cpu[name] = time.perf_counter() - start, cpu_seconds() - start_cpu
            print(f"\n{name}: {wall[name]:.1f} s wall, {cpu[name]:.1f} s CPU, metrics "
                  f"{','.join(results.metrics)}")
            print(format_costs(results))
    (previous, default), (previous_cpu, default_cpu) = wall.values(), cpu.values()
    print(f"\nprevious / default: {previous / default:.2f}x wall ({previous:.1f} s vs "
          f"{default:.1f} s), {previous_cpu / default_cpu:.2f}x CPU ({previous_cpu:.1f} s vs "
          f"{default_cpu:.1f} s)")


if __name__ == "__main__":
    main()
