"""Independent recomputation of a site's final epsilon, with the RDP and the PRV accountant."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.recompute_epsilon import main, recompute
from tests.helpers import micro_config, run_local

TARGET = ["privacy.enabled=true", "privacy.target_epsilon=3.0"]


@pytest.mark.slow  # a 3-round DP federation
def test_recomputed_epsilon_equals_the_reported_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_local(micro_config(tmp_path, *TARGET, "federation.num_rounds=3"))
    r = recompute(tmp_path / "run", site=1)
    assert (r.kind, r.site, r.rounds_trained) == ("rdp", 1, 3)
    assert r.ledger == r.from_config  # the ledger holds exactly what the config implies
    assert r.ledger[0][2] == 3 * 2  # 3 rounds x 2 local steps
    assert r.recomputed["rdp"] == r.reported == r.recomputed_from_config
    assert 2.9 < r.reported <= 3.0
    assert 0 < r.recomputed["prv"] < r.recomputed["rdp"]  # PRV: the tighter accountant
    main([str(tmp_path / "run"), "--site", "1"])
    out = capsys.readouterr().out
    assert out.count("(equal)") == 2 and "cross-check, prv" in out
    with pytest.raises(ValueError, match="site 5 has no ledger"):
        recompute(tmp_path / "run", site=5)


@pytest.mark.slow
def test_prv_accountant_end_to_end(tmp_path: Path) -> None:
    result, _, _ = run_local(micro_config(tmp_path, *TARGET, "privacy.accountant=prv"))
    final = result.records[-1]["privacy"]
    assert final["accountant"] == "prv"
    assert all(2.9 < eps <= 3.0 for eps in final["epsilon"].values())
    r = recompute(tmp_path / "run")  # the site with the largest epsilon
    assert r.kind == "prv" and r.reported == final["max_epsilon"]
    assert r.recomputed["prv"] == r.reported == r.recomputed_from_config
    assert r.recomputed["rdp"] > r.reported
