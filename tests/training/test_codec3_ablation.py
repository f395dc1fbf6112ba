"""Issue 27 item 7: the codec-3 ablation keys each run on its settings."""

from recipes import codec3_ablation


def test_a_rerun_with_other_settings_trains_anew(tmp_path, monkeypatch):
    runs = []

    def fake_run_stage(stage, config, overrides):
        out = next(o for o in overrides if o.startswith("train.output_dir=")).split("=", 1)[1]
        runs.append(out)
        (tmp_path / out / "model").mkdir(parents=True)

    monkeypatch.setattr(codec3_ablation, "run_stage", fake_run_stage)
    monkeypatch.chdir(tmp_path)
    codec2 = tmp_path / "codec2"
    codec2.mkdir()
    (codec2 / "model.safetensors").write_bytes(b"one")

    def train(steps, config="tiny"):
        return codec3_ablation._train("codec-3", config, tmp_path / "v",
                                      [f"init_from={codec2}", f"train.max_steps={steps}"])

    first = train(5)
    assert train(5) == first and len(runs) == 1
    assert train(6) != first and len(runs) == 2
    assert train(5, "tiny_sa") != first and len(runs) == 3
    (codec2 / "model.safetensors").write_bytes(b"retrained")
    assert train(5) != first and len(runs) == 4
