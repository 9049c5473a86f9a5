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


def test_the_results_table_is_made_from_the_stats_files_and_written_between_markers(tmp_path):
    rows = ["question,group,layer,n,prompts,correct,accuracy,ci_low,ci_high"]
    for question, values in {"colour_correct": [0, 0.5, 0.75, 0.8, 0.9], "relation_correct": [0] * 5}.items():
        rows += [
            f"{question},{question},{layer},8,2,0,{v},{v / 2},{min(1, v + 0.05)}"
            for layer, v in enumerate(values)
        ]
    (tmp_path / "accuracy.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "emergence-summary.csv").write_text(
        "question,group,prompts,emerged,never,median_layer,median_low,median_high,mean_layer\n"
        "colour_correct,colour_correct,2,2,0,1.5,1,2,1.5\n"
        "relation_correct,relation_correct,2,0,2,,,,\n"
    )
    table = bench.results_table(tmp_path)
    lines = table.splitlines()
    assert lines[0] == (
        "| attribute (question) | L0 | L1 | L2 | L3 | L4 [95% CI] | emergence layer [95% CI] (prompts) |"
    )
    colour = "| colour (`colour_correct`) | 0.00 | 0.50 | 0.75 | 0.80 | **0.90** [0.45, 0.95] |"
    assert lines[2] == colour + " 1.5 [1, 2] (2 of 2) |"
    assert lines[3].endswith("| **0.00** [0.00, 0.05] | never (0 of 2) |")
    assert len(lines) == 4  # questions without labels are left out

    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- shapes-bench:results -->\nold\n<!-- /shapes-bench:results -->\nafter\n")
    assert bench.write_between_markers(readme, bench.MARKER, table)
    assert (
        readme.read_text()
        == f"before\n<!-- shapes-bench:results -->\n{table}<!-- /shapes-bench:results -->\nafter\n"
    )
    assert not bench.write_between_markers(tmp_path / "accuracy.csv", bench.MARKER, table)
