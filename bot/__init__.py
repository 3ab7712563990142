"""The Slack edge: bolt app factory, listeners by concern, Block Kit rendering.

Thin by design. A handler parses what Slack sent, checks who may ask what, posts a
placeholder and hands the question to the workers by task name. Nothing here imports
model, index or parsing code (import-linter enforces it), so the bot starts in a second
and stays small.
"""
