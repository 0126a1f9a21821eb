"""bcirig.recording."""
