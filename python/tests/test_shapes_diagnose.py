"""The diagnosis's arms at a tiny size: each trains and reports its probe; a frozen encoder stays frozen
while a trained one moves."""

from __future__ import annotations

import json

import pytest

from diffusion_lens.shapes import diagnose


def reports(capsys, arm: str) -> list[dict]:
    diagnose.main(["--arm", arm, "--scenes", "32", "--steps", "2", "--every", "1", "--batch", "4"])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("arm, frozen", [("clip-v-frozen", True), ("clip-v-token-loss", False)])
def test_an_arm_reports_its_probe_each_step(capsys, arm, frozen):
    first, second = reports(capsys, arm)
    assert (first["arm"], first["step"], second["step"]) == (arm, 1, 2)
    assert set(first["centres"]) == set(diagnose.PLACES)
    assert first["lean_x"] == pytest.approx(
        first["centres"]["right"][0] - first["centres"]["left"][0], abs=0.011
    )
    assert (first["words_apart"] == second["words_apart"]) == frozen
