"""The shapes model's ablation tool at a tiny size: each variant trains with its own settings from the
shared first stage, is scored on held-out prompts, and a finished variant is not trained again."""

from __future__ import annotations

import csv
import json

import pytest

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
        # The first stage is the shared one: the same file, not a rebuilt copy; the settings are its own.
        assert (tmp_path / name / "seed0" / "vae.pt").samefile(tmp_path / "shared" / "seed0" / "vae.pt")
        recorded = json.loads((tmp_path / name / "seed0" / "config.json").read_text())
        assert {field: recorded[field] for field in expected} == expected
    with open(tmp_path / "ablation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    asked = {(row["variant"], row["answer"]): int(row["asked"]) for row in rows}
    # One held-out prompt per kind x one seed: each answer is asked once, of its own kind's image.
    assert asked == {(name, answer): 1 for name in names for answer in ablation.COLUMNS}
    table = (tmp_path / "ablation.md").read_text()
    assert all(f"| {name} |" in table for name in names)
    assert all(header in table for header in ablation.PROBE_HEADERS)
    kept = json.loads((tmp_path / "epsilon" / "scores.json").read_text())
    assert set(kept["probe"]) == set(ablation.PROBE_FIGURES)

    trained = (tmp_path / "epsilon" / "model" / "training.json").stat().st_mtime_ns
    capsys.readouterr()
    ablation.main(argv)
    out = capsys.readouterr().out
    assert "training" not in out and "scoring" not in out
    with pytest.raises(
        SystemExit, match=r"epsilon in .* was trained for 2 steps: use another --work-dir for 3"
    ):
        ablation.main([*argv, "--steps", "3"])
    assert (tmp_path / "epsilon" / "model" / "training.json").stat().st_mtime_ns == trained


def test_moved_tells_a_placed_object_from_the_same_image():
    import random

    from diffusion_lens.shapes.render import render
    from diffusion_lens.shapes.world import Obj, Scene

    left = Scene("single", (Obj("red", "circle", "small"),), position="left")
    right = ablation.other_position(left)
    assert right.position == "right" and right.objects == left.objects
    image = render(left, 32, random.Random(0))
    assert ablation.moved(image, render(right, 32, random.Random(0)))
    assert not ablation.moved(image, image.copy())
    blank = render(Scene("count", (Obj("red", "circle", "small"),), count=2), 32, random.Random(0)).point(
        lambda _: 255
    )
    assert ablation.moved(image, blank) and not ablation.moved(blank, blank)
