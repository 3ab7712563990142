"""What an answer worker loads: the generator seam, prompts, evidence, grounding, citations and
the answer path. Never imports training or evaluation code (an import-linter contract)."""
