"""The shapes benchmark's label files: the paper's CSV layout that `diffusion-lens stats` reads."""

from __future__ import annotations

import csv

from diffusion_lens.shapes import bench


def test_labels_are_written_in_the_paper_layout_one_file_per_question(tmp_path):
    answers = {
        "colour_correct": {(0, 1): {0: 0, 8: 1}, (0, 0): {0: 1, 4: 0, 8: 1}},
        "relation_correct": {(1, 0): {8: 0}},
    }
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "shapes__stale.csv").write_text("left from an earlier run")
    files = bench.write_labels(tmp_path / "labels", answers, ["a red circle", "a cup, on a bar"], [0, 4, 8])
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [
        "shapes__colour_correct.csv",
        "shapes__relation_correct.csv",
    ]
    assert [p.name for p in files] == ["shapes__colour_correct.csv", "shapes__relation_correct.csv"]
    with open(files[0], newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["prompt", "0", "4", "8", "seed"],
            ["a red circle", "1", "0", "1", "0"],
            ["a red circle", "0", "", "1", "1"],
        ]
    with open(files[1], newline="") as handle:
        assert list(csv.reader(handle))[1] == ["a cup, on a bar", "", "", "0", "0"]


def test_every_scorer_attribute_has_a_question():
    assert set(bench.QUESTION_OF.values()) >= {"object_correct", "colour_correct", "single_object_correct"}
    assert len(set(bench.QUESTION_OF.values())) == len(bench.QUESTION_OF)
