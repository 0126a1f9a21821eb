"""What people and mice see: the mouse's feedback display (Qt) and the grating renderer."""

from bcirig.gui.grating import dominant_orientation, grating_image, screen_image

__all__ = ["dominant_orientation", "grating_image", "screen_image"]
