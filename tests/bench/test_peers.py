"""The side-by-side benchmark's pure pieces: its ratios and the peer's requirements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.harness import BenchError
from bench.peers import QUIX, quix_requirements, summarize


def round_of(**speeds: float) -> dict[str, dict[str, Any]]:
    return {
        name: {"events_per_second": speed, "cpu_us_per_event": 1e6 / speed}
        for name, speed in speeds.items()
    }


def test_ratios_are_taken_within_a_round_then_their_median() -> None:
    rounds = [
        round_of(bare=100.0, **{"quix-alo": 20.0, "quix-eos": 10.0}, leadscore=20.0),
        round_of(bare=200.0, **{"quix-alo": 40.0, "quix-eos": 40.0}, leadscore=20.0),
        round_of(bare=50.0, **{"quix-alo": 10.0, "quix-eos": 5.0}, leadscore=15.0),
    ]
    summary = summarize(rounds)
    assert summary["events_per_second"]["leadscore"] == 20.0
    # Per round 0.2, 0.1, 0.3: the median of the ratios, not 20 / 100 of the medians.
    assert summary["to_bare"]["leadscore"] == pytest.approx(0.2)
    assert summary["leadscore_to_quix_eos"] == pytest.approx(2.0)  # of 2.0, 0.5, 3.0
    assert summary["to_bare"]["bare"] == 1.0


def test_the_peer_gets_the_core_dependencies_as_pyproject_pins_them(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["faust-streaming>=0.15.3,<0.16", "orjson>=3.10",'
        ' "msgpack>=1.1", "PyYAML>=6.0.2", "jsonschema>=4.23", "confluent-kafka>=2.16.1"]\n'
    )
    assert quix_requirements(pyproject) == [
        QUIX,
        "orjson>=3.10",
        "msgpack>=1.1",
        "PyYAML>=6.0.2",
        "jsonschema>=4.23",
    ]
    pyproject.write_text('[project]\ndependencies = ["orjson>=3.10"]\n')
    with pytest.raises(BenchError, match="msgpack"):
        quix_requirements(pyproject)
