"""bcirig.control."""
