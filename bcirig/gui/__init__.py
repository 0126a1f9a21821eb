"""bcirig.gui."""
