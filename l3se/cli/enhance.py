"""``l3se enhance IN OUT``: enhance a file, a folder tree or a manifest of noisy speech."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enhance",
        help="enhance noisy speech: a file, a folder (recursive) or a manifest",
        description="Enhance every input into a 16 kHz .wav under OUT, mirroring a folder's tree "
        "(OUT/<id>.wav for a manifest). Resumable: finished outputs are skipped. Unusable files "
        "are reported and the rest carries on; exit status 1 when any file was not enhanced. "
        "Under torchrun each rank takes its own share of the files.",
        epilog="examples: l3se enhance noisy.wav clean.wav | l3se enhance data/noisy out/ "
        "--batch-size 16 | torchrun --nproc-per-node 8 -m l3se enhance corpus.jsonl out/",
    )
    p.add_argument("input", type=Path, metavar="IN",
                   help="audio file, folder, .jsonl manifest ('path', optional 'id') or wav.scp")
    p.add_argument("output", type=Path, metavar="OUT", help="output .wav file or folder")
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="enhancer model directory (default: the bundled model)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="files read and enhanced together, and the most chunks (a short file, "
                   "or a piece of a long one) the model decodes at once (default: the model's "
                   "chunks_per_batch)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--dtype", default="auto",
                   help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 (default: auto)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads, token decoding included (default: torch's for WavLM "
                   "and the codec, and 1 for the token loop on the CPU, which gains little from "
                   "more: see benchmarks/bench_decode.py --threads)")
    p.add_argument("--mode", choices=("lm", "direct"),
                   help="lm: the language model generates the codec tokens; direct: the codec "
                   "quantizes and decodes the NI-Encoder's acoustic output, no LM (a diagnostic: "
                   "it shows whether a failure lies in the LM). Default: the model's")
    p.add_argument("--strategy", choices=("greedy", "sample", "mbr"),
                   help="token decoding: greedy, sample, or mbr (the codebook entry nearest to "
                   "the expectation of the entries under the LM's distribution). Default: the "
                   "model's")
    p.add_argument("--temperature", type=float, help="temperature of sampling and of mbr")
    p.add_argument("--top-k", type=int, help="sample from the k most likely entries (0: all)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (1: all)")
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--report", type=Path, metavar="PATH",
                   help="JSON report (default: OUT/enhance_report.json for a folder or manifest)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not print the model's one-line card summary (`l3se card` prints it all)")
    p.set_defaults(func=run)


def decode_overrides(args: argparse.Namespace) -> dict:
    """The decoding settings given on the command line, checked (``DecodeConfig``'s checks, each
    option alone so that the error names its flag)."""
    from l3se.cli import UserError
    from l3se.config import ConfigError
    from l3se.decoding import DecodeConfig

    given = {k: getattr(args, k) for k in ("strategy", "temperature", "top_k", "top_p", "seed")}
    given = {k: v for k, v in given.items() if v is not None}
    flags = {k: "--" + k.replace("_", "-") for k in given}
    for key, value in given.items():
        try:
            DecodeConfig(**{key: value})
        except ConfigError as e:
            raise UserError(f"{flags[key]}: {e}") from None
    if given and args.mode == "direct":
        raise UserError(f"{', '.join(flags.values())}: --mode direct decodes no tokens, so no "
                        "decoding options apply")
    return given


def run(args: argparse.Namespace) -> int:
    from l3se.cli import UserError
    from l3se.enhance_corpus import InputError, enhance_corpus, exit_status

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        report = enhance_corpus(
            args.input, args.output, args.model, files_per_batch=args.batch_size,
            chunks_per_batch=args.batch_size,
            device=args.device, dtype=args.dtype, decode=decode_overrides(args) or None,
            mode=args.mode, report=args.report, overwrite=args.overwrite,
            progress=not args.no_progress, decode_threads=args.threads or 1,
            announce=None if args.quiet else functools.partial(print, file=sys.stderr),
        )
    except InputError as e:
        raise UserError(str(e)) from None
    s = report["summary"]
    rtf = f", RTF {s['rtf']:.3f}" if s["rtf"] is not None else ""
    print(f"enhanced {s['ok'] - s['resumed']} file(s) ({s['audio_seconds']:.1f} s of audio{rtf}); "
          f"{s['resumed']} already done, {s['skipped']} skipped, {s['failed']} failed")
    for f in report["files"]:
        if f["status"] != "ok":
            print(f"  {f['status']}: {f['input']}: {f['reason']}")
    return exit_status(report)
