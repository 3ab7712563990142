"""The bot's first burst of questions: several listener threads reach the Celery client at once.

Celery is a lazy module that fails ("cannot import name 'Celery'") when a fresh process
imports it from several threads together, so this runs in new interpreters, where
nothing has imported Celery yet. Before the gateway serialised the client's creation,
about half of such starts lost a question to an ImportError.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from bot.gateway import WorkerGateway

    gateway = WorkerGateway(sys.argv[1])
    start = threading.Barrier(8)
    errors = []

    def first_use(i):
        start.wait()
        try:
            if i % 2:
                gateway.send("lorebot.ping", {}, "lorebot-test-nobody-listens", None)
            else:
                gateway.state("no-such-task")
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("\\n".join(errors))
    sys.exit(1 if errors else 0)
    """
)


def test_concurrent_first_use_of_the_gateway_submits_every_task(redis_server, redis_client):
    for attempt in range(4):
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT, redis_server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"start {attempt}: {run.stdout}{run.stderr[-2000:]}"
    assert redis_client.llen("lorebot-test-nobody-listens") == 4 * 4
