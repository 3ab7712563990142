"""slm.training."""
