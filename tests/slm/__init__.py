"""Tests of the slm package, in its layout: serving, training, evals, and the real model."""
