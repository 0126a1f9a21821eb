"""The session figure is written from a real session file."""

from pathlib import Path

import numpy as np
import pytest

from bcirig.plots import plot_session
from bcirig.recording.layout import FEEDBACK_STAMPS
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT


@pytest.mark.slow
def test_session_png_is_written_beside_the_file(tmp_path: Path) -> None:
    result = Supervisor(ROOT / "tests" / "configs" / "e2e.toml", ROOT / "hardware" / "rigs" / "sim.toml",
                        data_dir=tmp_path, mode="lockstep").run()
    png = plot_session(result.path)
    assert png == result.path.with_suffix(".png")
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 600 and img.shape[1] > 900  # three panels at 90 dpi
    # what is drawn is the session: the readout above the baseline minimum, the threshold in force,
    # one trace per ROI, a vertical line per trial outcome, and the median latency in the legend
    from bcirig.plots import session_figure
    from bcirig.recording import SessionFile

    fig = session_figure(result.path)
    with SessionFile(result.path) as sf:
        ro, fb, trials = sf.table("readout"), sf.table("feedback"), sf.table("trials")
        calib = next(e["data"] for e in sf.events() if e["name"] == "calibration")
    readout_line, threshold_line = fig.axes[0].lines[:2]
    np.testing.assert_allclose(readout_line.get_ydata(), ro["readout"] - calib["baseline_min"])
    np.testing.assert_allclose(readout_line.get_xdata(), ro["frame"] / 30.0)
    np.testing.assert_allclose(threshold_line.get_ydata(), fb["threshold"], equal_nan=True)
    assert len(fig.axes[0].lines) == 2 + len(trials["outcome"])  # one line per outcome
    # each outcome's line stands at its frame, in its outcome's colour
    from matplotlib.colors import to_rgba

    from bcirig.plots import OUTCOME_COLOURS

    for line, outcome, frame in zip(fig.axes[0].lines[2:], trials["outcome"], trials["outcome_frame"], strict=True):
        assert list(line.get_xdata()) == [frame / 30.0, frame / 30.0]
        assert to_rgba(line.get_color()) == to_rgba(OUTCOME_COLOURS[outcome.decode()])
    # one dF/F trace per ROI, each its ROI's values offset by a constant spacing
    traces = fig.axes[1].lines
    assert len(traces) == ro["dff"].shape[1]
    offsets = [np.nanmedian(line.get_ydata() - ro["dff"][:, i]) for i, line in enumerate(traces)]
    for i, line in enumerate(traces):
        np.testing.assert_allclose(line.get_ydata(), ro["dff"][:, i] + offsets[i], rtol=1e-6, atol=1e-6)
    assert offsets[0] == 0.0 and np.all(np.diff(offsets) > 0)
    # the latency panel's median and p99 are those of frame arrival -> feedback sent, recounted here
    t = fb["t_ns"]
    arrive, out = t[:, FEEDBACK_STAMPS.index("arrive")], t[:, FEEDBACK_STAMPS.index("task_out")]
    ms = (out - arrive)[(arrive > 0) & (out > 0)] / 1e6
    legend = [x.get_text() for x in fig.axes[2].get_legend().get_texts()]
    assert legend == [f"median {np.median(ms):.2f} ms", f"p99 {np.percentile(ms, 99):.2f} ms"]
    median_line = fig.axes[2].lines[0]
    assert median_line.get_xdata()[0] == pytest.approx(np.median(ms))
