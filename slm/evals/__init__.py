"""Measuring the answer path: ``lorebot eval`` over a SQuAD file (evaluate, squad, evalset,
runner, report, history), the metrics, and the prompt-injection check."""
