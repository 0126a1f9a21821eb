"""bcirig.devices."""
