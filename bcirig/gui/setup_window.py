"""The set-up phase's window: the reference image, the candidates and the ROIs, edited with the mouse.

A thin layer over :class:`~bcirig.gui.setup_editor.SetupEditor`: a click picks the candidate under it
(or selects the ROI there); in draw mode clicks add polygon vertices and "Close polygon" (or a double
click) makes the ROI; arrow keys move the selected ROI by a pixel; Delete removes it; the group box
assigns it; "Dendrite of #" makes it the dendrite of another ROI. Save/Load use bcirig's ROI file
(ImageJ sets load too). Day 2 on, the proposed field-of-view alignment is shown to confirm or reject.
"Accept set-up" writes the answer for the supervisor and closes; "Reject" stops the session before
anything is recorded.

Run by the supervisor as ``python -m bcirig.gui.setup_window FOLDER`` (``--class module:Class``: a
test's operator, a subclass that drives the window itself).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from bcirig.gui.console import group_colour, outline_overlay
from bcirig.gui.setup_editor import SetupEditor, read_request, write_answer
from bcirig.processing.rois import RoiError, RoiSet

CANDIDATE_COLOUR = (110, 110, 110)
SELECTED_COLOUR = (255, 255, 255)


class SetupWindow(QWidget):
    """The operator's set-up editor on the day's reference image."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        reference, plane, candidates, proposal, info, groups = read_request(folder)
        ref = reference[plane] if reference.ndim == 3 else reference
        self.editor = SetupEditor(ref.shape, plane=plane, candidates=candidates, groups=tuple(groups) or ("P+", "P-"),
                                  rois=proposal)
        if info.get("fov_offset_px") is not None:
            self.editor.alignment = info
        self.answered = False
        self.drawing: list[list[float]] | None = None
        self.setWindowTitle(f"bcirig set-up — day {info.get('day', 1)}")

        self.view = pg.GraphicsLayoutWidget()
        self.box = self.view.addViewBox(lockAspect=True, invertY=True)
        self.image = pg.ImageItem(ref)
        lo, hi = np.percentile(ref, [1, 99.7])
        self.image.setLevels((float(lo), float(hi if hi > lo else lo + 1)))
        self.cand_item, self.roi_item = pg.ImageItem(), pg.ImageItem()
        self.path_item = pg.PlotDataItem(pen=pg.mkPen((255, 255, 0), width=1), symbol="o", symbolSize=5)
        for item in (self.image, self.cand_item, self.roi_item, self.path_item):
            self.box.addItem(item)
        self.view.scene().sigMouseClicked.connect(self._clicked)

        self.group_box = QComboBox()
        self.group_box.setEditable(True)
        self.group_box.addItems(self.editor.groups)
        self.group_box.currentTextChanged.connect(self._group_changed)
        self.parent_box = QSpinBox()
        self.parent_box.setRange(0, 9999)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.align_label = QLabel(self._alignment_text(info))

        def button(text: str, slot: Any) -> QPushButton:
            b = QPushButton(text)
            b.clicked.connect(lambda _=False: slot())
            return b

        self.buttons = {
            "draw": button("Draw polygon", self.start_drawing), "close": button("Close polygon", self.close_polygon),
            "assign": button("Assign group", self.assign_selected), "soma": button("Soma", self.make_soma),
            "dendrite": button("Dendrite of #", self.make_dendrite), "delete": button("Delete", self.delete_selected),
            "save": button("Save…", self.save_dialog), "load": button("Load…", self.load_dialog),
            "confirm_alignment": button("Confirm alignment", lambda: self.verdict(True)),
            "reject_alignment": button("Reject alignment", lambda: self.verdict(False)),
            "accept": button("Accept set-up", self.accept_setup), "reject": button("Reject set-up", self.reject_setup),
        }
        row1, row2, row3 = QHBoxLayout(), QHBoxLayout(), QHBoxLayout()
        for k in ("draw", "close", "delete", "save", "load"):
            row1.addWidget(self.buttons[k])
        row2.addWidget(QLabel("group"))
        row2.addWidget(self.group_box)
        for k in ("assign", "soma", "dendrite"):
            row2.addWidget(self.buttons[k])
        row2.addWidget(self.parent_box)
        row3.addWidget(self.align_label, 1)
        for k in ("confirm_alignment", "reject_alignment", "accept", "reject"):
            row3.addWidget(self.buttons[k])
        for k in ("confirm_alignment", "reject_alignment"):
            self.buttons[k].setEnabled(bool(self.editor.alignment))
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addLayout(row3)
        layout.addWidget(self.status)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.resize(1000, 900)
        self.redraw()

    # ------------------------------------------------------------------ input -> editor
    def image_point(self, scene_pos: QPointF) -> tuple[float, float]:
        """A scene position as image (y, x), pixel centres at whole numbers."""
        p = self.box.mapSceneToView(scene_pos)
        return p.y() - 0.5, p.x() - 0.5

    def scene_point(self, y: float, x: float) -> QPointF:
        """Image pixel (y, x) as a scene position (the inverse of :meth:`image_point`)."""
        point: QPointF = self.box.mapViewToScene(QPointF(x + 0.5, y + 0.5))  # pyqtgraph is untyped
        return point

    def _clicked(self, event: Any) -> None:
        y, x = self.image_point(event.scenePos())
        if event.double():
            if self.drawing is not None:
                self.close_polygon()
            return
        self.click(y, x)

    def click(self, y: float, x: float) -> None:
        """A click on image pixel (y, x): a vertex while drawing, else pick or select."""
        if self.drawing is not None:
            self.drawing.append([y, x])
        else:
            self.editor.pick(y, x)
        self.redraw()

    def keyPressEvent(self, event: Any) -> None:  # Qt calls it by this name
        steps = {Qt.Key.Key_Up: (-1, 0), Qt.Key.Key_Down: (1, 0), Qt.Key.Key_Left: (0, -1), Qt.Key.Key_Right: (0, 1)}
        key = Qt.Key(event.key())
        if key in steps and self.editor.selected is not None:
            self._try(lambda: self.editor.move(self.editor.selected or 0, *steps[key]))
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.delete_selected()
        else:
            super().keyPressEvent(event)

    def _group_changed(self, text: str) -> None:
        if text:
            self.editor.group = text

    def _try(self, action: Any) -> None:
        try:
            action()
        except RoiError as exc:
            self.status.setText(f"refused: {exc}")
            return
        self.redraw()

    # ------------------------------------------------------------------ actions
    def start_drawing(self) -> None:
        """Clicks add vertices from now on."""
        self.drawing = []
        self.redraw()

    def close_polygon(self) -> None:
        """The vertices clicked so far become an ROI of the current group."""
        points, self.drawing = self.drawing or [], None
        self._try(lambda: self.editor.add_polygon(points))

    def assign_selected(self) -> None:
        """The selected ROI goes into the group box's group."""
        if self.editor.selected is not None:
            self._try(lambda: self.editor.assign(self.editor.selected or 0, self.group_box.currentText()))

    def make_soma(self) -> None:
        """The selected ROI is a soma."""
        if self.editor.selected is not None:
            self._try(lambda: self.editor.set_kind(self.editor.selected or 0, "soma"))

    def make_dendrite(self) -> None:
        """The selected ROI is the dendrite of ROI number ``parent_box``."""
        if self.editor.selected is not None:
            self._try(lambda: self.editor.set_kind(self.editor.selected or 0, "dendrite", self.parent_box.value()))

    def delete_selected(self) -> None:
        """Remove the selected ROI."""
        if self.editor.selected is not None:
            self._try(lambda: self.editor.delete(self.editor.selected or 0))

    def save_dialog(self) -> None:
        """Save the ROIs to a bcirig ROI file."""
        path, _ = QFileDialog.getSaveFileName(self, "Save ROIs", str(self.folder / "rois.toml"), "ROI files (*.toml)")
        if path:
            self._try(lambda: self.editor.save(path))

    def load_dialog(self) -> None:
        """Load ROIs (bcirig .toml, ImageJ .roi/.zip), replacing the list."""
        path, _ = QFileDialog.getOpenFileName(self, "Load ROIs", str(self.folder), "ROIs (*.toml *.roi *.zip)")
        if path:
            self._try(lambda: self.editor.load(path))

    def verdict(self, ok: bool) -> None:
        """Confirm or reject the proposed alignment; a rejected field stops the session."""
        self._try(lambda: self.editor.confirm_alignment(ok))
        if not ok:
            self.reject_setup("the operator rejected the field-of-view alignment")

    def accept_setup(self) -> None:
        """Hand the ROIs to the supervisor and close (refused with a line if something is missing)."""
        missing = self.editor.ready()
        if missing:
            self.status.setText(f"cannot accept yet: {missing}")
            return
        write_answer(self.folder, True, editor=self.editor)
        self.answered = True
        self.close()

    def reject_setup(self, reason: str = "the operator rejected the set-up") -> None:
        """Stop the session before anything is recorded."""
        write_answer(self.folder, False, reason)
        self.answered = True
        self.close()

    # ------------------------------------------------------------------ drawing
    def redraw(self) -> None:
        """Candidates dim, ROIs in their group colour, the selected one white."""
        shape = self.editor.shape
        taken = set(self.editor.picked_candidates())
        cands = RoiSet(c for k, c in enumerate(self.editor.candidates) if k not in taken)
        over = outline_overlay(cands, shape)
        over[over[..., 3] > 0, :3] = CANDIDATE_COLOUR
        self.cand_item.setImage(over, levels=(0, 255))
        try:
            rois = self.editor.roi_set() if self.editor.rois else RoiSet()
        except RoiError:
            rois = RoiSet()
        roi_over = outline_overlay(rois, shape, plane=self.editor.plane)
        if self.editor.selected is not None and self.editor.selected < len(rois):
            sel = outline_overlay(RoiSet([rois[self.editor.selected]]), shape)
            roi_over[sel[..., 3] > 0, :3] = SELECTED_COLOUR
        self.roi_item.setImage(roi_over, levels=(0, 255))
        if self.drawing:
            pts = np.asarray(self.drawing)
            self.path_item.setData(pts[:, 1] + 0.5, pts[:, 0] + 0.5)
        else:
            self.path_item.setData([], [])
        names = self.editor.names()
        listing = "  ".join(f"#{i} {names[i]}" + (f"→{names[r.parent]}" if r.kind == "dendrite" else "")
                            for i, r in enumerate(self.editor.rois))
        mode = "drawing: click vertices, then Close polygon" if self.drawing is not None else \
            "click a candidate (grey) to add it to the group; click an ROI to select it"
        missing = self.editor.ready()
        self.status.setText(f"{mode}\n{len(self.editor.rois)} ROIs: {listing or '—'}\n"
                            + (f"to accept: {missing}" if missing else "ready to accept"))

    def colour_of(self, group: str) -> tuple[int, int, int]:
        """The colour ROIs of ``group`` are outlined in."""
        return group_colour(group, self.editor.groups)

    @staticmethod
    def _alignment_text(info: dict[str, Any]) -> str:
        off = info.get("fov_offset_px")
        if off is None:
            return "day 1: no previous field to align to"
        return (f"field offset {off[0]:+.1f}, {off[1]:+.1f} px from day {info.get('previous_day')} "
                f"(quality {info.get('alignment_quality', float('nan')):.2f})")

    def closeEvent(self, event: Any) -> None:  # Qt calls it by this name
        if not self.answered:  # closed by the window manager: that is a rejection, said so
            write_answer(self.folder, False, "the set-up window was closed without accepting")
            self.answered = True
        super().closeEvent(event)


def main(argv: list[str] | None = None) -> int:
    """``python -m bcirig.gui.setup_window FOLDER [--class module:Class]``."""
    from bcirig.gui.display import application

    p = argparse.ArgumentParser(prog="bcirig-setup-window")
    p.add_argument("folder")
    p.add_argument("--class", dest="cls", default="", help="module:Class, a SetupWindow subclass (tests)")
    args = p.parse_args(argv)
    app = application()
    cls: type[SetupWindow] = SetupWindow
    if args.cls:
        module, name = args.cls.split(":", 1)
        cls = getattr(importlib.import_module(module), name)
    window = cls(Path(args.folder))
    window.show()
    app.exec()
    if not window.answered:
        write_answer(Path(args.folder), False, "the set-up window ended without an answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
