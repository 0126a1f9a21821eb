"""bcirig.nodes."""
