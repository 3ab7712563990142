"""Bolt listeners by concern, all transport-free.

:mod:`bot.listeners.core` holds what they share (settings, Redis, the worker gateway,
the watchdog, the feedback store); each other module answers one kind of request:
questions (mentions, messages, ``/ask``), ``/lorebot`` admin commands, 👍 / 👎 clicks
and files shared in the admin channel. :mod:`bot.app` registers them with bolt.
"""
