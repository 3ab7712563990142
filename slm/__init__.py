"""The small language model: the generator seam, grounded prompts, citations and answers.

Importing this package is cheap on purpose: ``llama_cpp`` is imported only when a
:class:`slm.serving.generator.LlamaGenerator` first loads its model, so test code, the CLI and
the evaluation harness can import ``slm.serving.prompt`` or ``slm.serving.citations`` without it.
Import the public names from their modules (``from slm.serving.generator import Generator``).
"""
