"""Test support: fakes and harnesses shared by the test suite."""
