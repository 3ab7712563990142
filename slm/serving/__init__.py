"""slm.serving."""
