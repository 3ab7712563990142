"""The nightly refresh: question-answer pairs, RAFT examples, LoRA training and export, the
gate, and the adapter registry."""
