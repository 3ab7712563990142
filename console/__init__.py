"""The admin console: lorebot in the browser, for admins only (`lorebot console`).

A small server-rendered web application (Starlette + Jinja2, a few lines of our own
JavaScript for the live parts) over the same Redis, data directory and stores as the
workers: it reads the index manifest, the adapter registry, the feedback store and the
channel map, and it changes things only the way the bot's ``/lorebot`` does (tasks by name,
the same Redis hash, the feedback store's API), writing one audit line per change.

Modules: app (routes, pages, the guard: sign-in, CSRF, bounded bodies, headers), auth
(password, sessions' key, sign-in throttle), oidc (OpenID Connect sign-in), data (read
models of every page), actions (every change, audited), audit (the audit log), server
(uvicorn with the bot server's connection hardening).
"""

from console.app import build_app

__all__ = ["build_app"]
