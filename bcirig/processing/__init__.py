"""bcirig.processing."""
