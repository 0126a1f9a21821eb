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
    assert np.std(img[..., :3]) > 0.05  # something was drawn
