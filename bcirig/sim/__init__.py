"""bcirig.sim."""
