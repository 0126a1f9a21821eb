"""bcirig.acquisition."""
