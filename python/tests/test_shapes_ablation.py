"""The shapes model's ablation tool at a tiny size: each variant trains with its own settings from the
shared first stage, is scored on held-out prompts, and a finished variant is not trained again."""

from __future__ import annotations

import csv
import json

from diffusion_lens.shapes import ablation

TINY = ["--dataset-size", "32", "--vae-steps", "2", "--batch", "4"]
SCORING = ["--steps", "2", "--parallel", "2", "--per-kind", "1", "--seeds", "1"]


def test_variants_train_apart_and_are_scored(tmp_path, capsys):
    names = ["epsilon", "v-prediction-zero-snr"]
    argv = ["--work-dir", str(tmp_path), *SCORING, *TINY, *(a for n in names for a in ("--only", n))]
    ablation.main(argv)
    for name in names:
        scheduler = json.loads(
            (tmp_path / name / "model" / "scheduler" / "scheduler_config.json").read_text()
        )
        expected = ablation.VARIANTS[name]
        assert scheduler["prediction_type"] == expected["prediction_type"]
        assert scheduler["rescale_betas_zero_snr"] == expected["zero_terminal_snr"]
        # The first stage is the shared one: the same file, not a rebuilt copy.
        assert (tmp_path / name / "seed0" / "vae.pt").samefile(tmp_path / "shared" / "seed0" / "vae.pt")
    with open(tmp_path / "ablation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    asked = {(row["variant"], row["answer"]): int(row["asked"]) for row in rows}
    # One held-out prompt per kind x one seed: each answer is asked once, of its own kind's image.
    assert asked == {(name, answer): 1 for name in names for answer in ablation.COLUMNS}
    table = (tmp_path / "ablation.md").read_text()
    assert all(f"| {name} |" in table for name in names)

    trained = (tmp_path / "epsilon" / "model" / "training.json").stat().st_mtime_ns
    capsys.readouterr()
    ablation.main(argv)
    assert "training" not in capsys.readouterr().out
    assert (tmp_path / "epsilon" / "model" / "training.json").stat().st_mtime_ns == trained
