"""bcirig simulate: session files per mouse-day, determinism, carried calibration, summary and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bcirig.sim.campaign import main
from tests.sim.conftest import short_text


def _datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a session file except wall-clock stamps (they differ run to run by design)."""
    out: dict[str, np.ndarray] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and not name.endswith("_ns") and name != "frame_index":
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("campaign")
    proto = tmp / "short.toml"
    proto.write_text(short_text(baseline=1000, trials=4))
    common = [str(proto), "--mice", "2", "--days", "2", "--rule", "vectorized,none", "--seed", "3", "--quiet"]
    assert main([*common, "--workers", "1", "--out", str(tmp / "a")]) == 0
    assert main([*common, "--workers", "2", "--out", str(tmp / "b")]) == 0
    return tmp / "a", tmp / "b", proto


def test_one_session_file_per_mouse_per_day(runs: tuple[Path, Path, Path]) -> None:
    a, _, _ = runs
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("session.h5"))
    assert files == [f"{rule}_m{m:02d}/day{d:02d}_1/session.h5"
                     for rule in ("none", "vectorized") for m in (0, 1) for d in (1, 2)]
    with h5py.File(a / "vectorized_m00/day01_1/session.h5", "r") as f:
        assert f.attrs["complete"]
        assert f.attrs["sim_rule"] == "vectorized"
        n = f["readout/frame"].shape[0]
        assert f["truth/rates"].shape == (n, 8)  # ground truth: rates of the 8 BCI units, every frame
        assert f["truth/shift"].shape == (n, 2)
        assert n >= 1000 + 4 * 75  # baseline + 4 trials of at least grey + hold + ITI
        assert len(f["trials/outcome"]) == 4
        st = f["sim_state"]
        assert st.attrs["rule"] == "vectorized"
        assert st["w_plastic"].shape == st["w_plastic_naive"].shape == (8, len(st["plastic_units"]))


def test_same_seed_same_session_data_whatever_the_workers(runs: tuple[Path, Path, Path]) -> None:
    a, b, _ = runs
    for path in sorted(a.rglob("session.h5")):
        da, db = _datasets(path), _datasets(b / path.relative_to(a))
        assert da.keys() == db.keys()
        for name in da:
            assert da[name].tobytes() == db[name].tobytes(), (path, name)
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["curves"] == sb["curves"]


def test_summary_and_plot(runs: tuple[Path, Path, Path]) -> None:
    a, _, _ = runs
    s = json.loads((a / "summary.json").read_text())
    assert set(s["curves"]) == {"vectorized", "none"}
    day1 = s["curves"]["vectorized"]["days"][0]
    assert 0.0 <= day1["hit_rate"] <= 1.0 and 0.0 <= day1["chance"] <= 0.5
    assert s["sim_config"]["units"] == 200  # parameters saved with the results
    for mouse in s["per_mouse"]:
        z = [d["threshold_z"] for d in mouse["days"]]
        assert z[1] >= z[0]  # difficulty never drops across days
        assert all(d["dale_violations"] == 0 for d in mouse["days"])
    png = (a / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_simulation_table_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proto = tmp_path / "bad.toml"
    proto.write_text(short_text(simulation="units = 2"))
    assert main([str(proto), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: simulation.units = 2: expected an integer in [20, 5000]" in err


def test_unknown_rule_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "x.toml"), "--rule", "hebbian"])
    assert exc.value.code == 2


def test_same_session_data_whatever_the_blas_threads(tmp_path: Path) -> None:
    """The same campaign in fresh processes under 1 and 2 BLAS threads, 1 and 2 workers: byte-identical data.

    Each run is its own process, so nothing that ran earlier in this test process can pin or unpin
    BLAS for it (the order dependency of issue #8: a Pipeline built earlier pinned BLAS for the
    in-process run only).
    """
    proto = tmp_path / "short.toml"
    proto.write_text(short_text(baseline=600, trials=2))
    runs = {}
    for threads, workers in (("1", "1"), ("2", "2"), ("2", "1")):
        out = tmp_path / f"t{threads}_w{workers}"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-m", "bcirig.cli", "simulate", str(proto), "--mice", "2", "--days", "2",
             "--rule", "vectorized", "--seed", "4", "--quiet", "--workers", workers, "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=240,
        )
        assert done.returncode == 0, done.stderr
        runs[(threads, workers)] = out
    reference = runs[("1", "1")]
    files = sorted(reference.rglob("session.h5"))
    assert len(files) == 4
    for other in list(runs.values())[1:]:
        for path in files:
            da, db = _datasets(path), _datasets(other / path.relative_to(reference))
            assert da.keys() == db.keys()
            for name in da:
                assert da[name].tobytes() == db[name].tobytes(), (other.name, path.relative_to(reference), name)
