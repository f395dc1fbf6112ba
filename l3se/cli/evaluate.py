"""``l3se evaluate``: score enhanced outputs of one or more systems against an eval set."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score enhanced speech (DNSMOS, WER, PESQ, ... ) and write comparison reports",
        description="Score one or more systems' outputs against an eval-set manifest or a folder "
        "of clean references; write per-file results, a summary with 95%% CIs, a comparison table "
        "and SNR breakdowns. Model-based metrics without a local model are skipped. Baselines "
        "(conventional denoisers) enhance the manifest's noisy files and are scored beside them.",
        epilog="example: l3se evaluate --ref data/evalset --system noisy "
        "--system l3se=out/enhanced --baseline dfn3 --baseline rnnoise --out reports/eval",
    )
    p.add_argument("--ref", metavar="MANIFEST_OR_DIR",
                   help="eval-set manifest (JSONL from `l3se data evalset`) or folder of clean "
                   "references (a .txt beside a file is its transcript); omit for non-intrusive metrics only")
    p.add_argument("--system", action="append", default=[], metavar="NAME=DIR",
                   help="outputs of a system, matched to references by relative path or file stem; "
                   "repeatable. 'noisy' and 'clean' alone take the manifest's own files")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME",
                   help="also run a reference enhancer on the noisy files and score it: "
                   "dfn3 (DeepFilterNet3), rnnoise, noisereduce (spectral gating); repeatable. "
                   "Needs pip install -e \".[baselines]\"; outputs are kept under OUT/baselines")
    p.add_argument("--metrics", default="default",
                   help="comma list of metrics or groups: default, offline (default plus "
                   "open-vocabulary pocketsphinx WER/dWER), paper, all (see --list-metrics); "
                   "default: %(default)s")
    p.add_argument("--model", action="append", default=[], metavar="KEY=NAME_OR_PATH",
                   help="model for a model-based metric: sbs (NAME[#LAYER]), lps, utmos, sim_wavlm, whisper")
    p.add_argument("--download", action="store_true",
                   help="allow model downloads from the hub (default: local paths and cache only)")
    p.add_argument("--out", metavar="DIR", help="report folder (also holds the resume cache)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel worker processes of one compute thread each "
                   "(default: one per available core)")
    p.add_argument("--snr-bin", type=float, default=5.0, metavar="DB",
                   help="SNR bin width in dB for the breakdown (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-metrics", action="store_true", help="list metrics and exit")
    p.set_defaults(func=run)


def _pairs(values: list[str], what: str, allow_bare: tuple[str, ...] = ()) -> dict[str, str | None]:
    from l3se.cli import UserError

    out: dict[str, str | None] = {}
    for v in values:
        name, sep, value = v.partition("=")
        name = name.strip()
        if not name or (not sep and name not in allow_bare) or (sep and not value):
            hint = f" (or just {'/'.join(allow_bare)})" if allow_bare else ""
            raise UserError(f"{what} {v!r} is not of the form NAME=VALUE{hint}")
        if name in out:
            raise UserError(f"{what} {name!r} given twice")
        out[name] = value if sep else None
    return out


def run(args: argparse.Namespace) -> int:
    from l3se.cli import UserError

    if args.list_metrics:
        from l3se.evaluation.registry import DEFAULT, OFFLINE, PAPER, SPECS

        for s in SPECS.values():
            model = f" [model {s.model_key}: {s.default_model}]" if s.model_key else ""
            print(f"{s.name:13s} {s.help}{model}")
        print(f"\ndefault: {','.join(DEFAULT)}\noffline: {','.join(OFFLINE)}\n"
              f"paper: {','.join(PAPER)}")
        from l3se.evaluation.baselines import PACKAGES

        print("baselines (--baseline): " + ", ".join(f"{n} ({p})" for n, p in PACKAGES.items()))
        return 0
    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.snr_bin <= 0:
        raise UserError("--snr-bin must be positive")
    if not args.system and not args.baseline:
        raise UserError("give at least one --system NAME=DIR (or --system noisy) or --baseline NAME")
    systems = _pairs(args.system, "--system", allow_bare=("noisy", "clean"))
    models = {k: v for k, v in _pairs(args.model, "--model").items() if v is not None}

    from l3se.evaluation import InputError, evaluate
    from l3se.evaluation.registry import SPECS

    unknown = set(models) - {s.model_key for s in SPECS.values() if s.model_key}
    if unknown:
        raise UserError(f"--model: unknown key {sorted(unknown)[0]!r}; use sbs, lps, utmos, sim_wavlm or whisper")
    try:
        results = evaluate(
            args.ref, systems, metrics=args.metrics, out_dir=args.out, workers=args.workers,
            models=models, local_only=not args.download, progress=not args.no_progress,
            snr_bin_db=args.snr_bin, baselines=args.baseline,
        )
    except InputError as e:
        raise UserError(str(e)) from None
    from l3se.evaluation.registry import EXPENSIVE, parse_selection
    from l3se.evaluation.report import format_comparison, format_costs

    print(format_comparison(results))
    costs = format_costs(results)
    if costs:
        print(costs)
    left_out = [n for n in EXPENSIVE if n not in parse_selection(args.metrics)]
    if "default" in (m.strip() for m in args.metrics.split(",")) and left_out:
        print(f"not in the default set for their cost: {', '.join(left_out)} (open-vocabulary "
              f"pocketsphinx); --metrics default,{','.join(left_out)} adds them")
    if results.reports:
        print(f"reports written to {args.out}")
    return 0
