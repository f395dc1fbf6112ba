"""DNSMOS (Reddy et al.): P.835 SIG / BAK / OVRL and P.808 MOS, from the onnx models that ship
inside the ``speechmos`` wheel. Non-intrusive: only the output signal is rated.

The paper's single "DNSMOS" column is taken to be P.835 OVRL (``dnsmos_ovrl``).
"""

from __future__ import annotations

import os

import numpy as np

from l3se.evaluation.base import SAMPLE_RATE, Metric, Pair


class DNSMOSMetric(Metric):
    name = "dnsmos"
    columns = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")

    def __init__(self, threads: int = 1):
        import onnxruntime as ort
        from speechmos import dnsmos

        models = os.path.join(os.path.dirname(dnsmos.__file__), "dnsmos_models")
        opts = ort.SessionOptions()
        # speechmos opens sessions with one thread per core; workers share the cores instead.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        scorer = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)
        scorer.primary_model_path = os.path.join(models, "sig_bak_ovr.onnx")
        scorer.onnx_sess = ort.InferenceSession(scorer.primary_model_path, opts)
        scorer.p808_onnx_sess = ort.InferenceSession(os.path.join(models, "model_v8.onnx"), opts)
        self._scorer = scorer

    def score(self, pair: Pair) -> dict:
        wav = np.clip(pair.est, -1.0, 1.0)
        out = self._scorer(wav, SAMPLE_RATE, False)
        return {
            "dnsmos_ovrl": float(out["ovrl_mos"]),
            "dnsmos_sig": float(out["sig_mos"]),
            "dnsmos_bak": float(out["bak_mos"]),
            "dnsmos_p808": float(out["p808_mos"]),
        }
