"""lorebot's shared kernel: settings, domain types, errors, contracts, files and logging.

It imports nothing of lorebot's other packages; ``lorebot.cli`` is the one exception, the
command line that mounts every package's commands.
"""
