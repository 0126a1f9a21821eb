"""bcirig: closed-loop optical brain-computer-interface rig software."""

__version__ = "0.1.0"
