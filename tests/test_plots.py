"""The session figure is written from a real session file."""

import numpy as np
import pytest

from bcirig.plots import plot_session
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT


@pytest.mark.slow
def test_session_png_is_written_beside_the_file(tmp_path):
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
    assert len(fig.axes[1].lines) == ro["dff"].shape[1]
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert legend[0].startswith("median ") and legend[0].endswith(" ms")
