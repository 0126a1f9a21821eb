"""A writer process for the crash tests: writes frames and readouts, announces each flush on stdout."""

import sys

import numpy as np

from bcirig.messages import Frame, Readout
from bcirig.processing import Roi, RoiSet
from bcirig.recording import SessionWriter


def main(path: str, frames: int) -> None:
    rois = RoiSet([Roi.disk("a", 0, (8, 8), 3, group="P+"), Roi.disk("b", 0, (20, 20), 3, group="P-")])
    w = SessionWriter(path, protocol_text="[protocol]\nname='t'\n", rig_text="", rois=rois.to_arrays(), n_rois=2,
                      reference=np.zeros((1, 32, 32), np.float32), frame_shape=(1, 32, 32), frame_dtype="uint16",
                      record_frames=True, flush_interval_s=1.0)
    for i in range(frames):
        w.write(Frame(frame=i, data=np.full((1, 32, 32), i % 65535, np.uint16)))
        w.write(Readout(frame=i, F=np.array([i, -i], np.float32), readout=float(i)))
        if i % 50 == 49:
            w.flush()
            print(f"flushed {i + 1}", flush=True)
            sys.stdin.readline()  # wait for the test to say go on (or to kill us)
    w.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
