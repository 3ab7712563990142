"""slm.evals."""
