"""The bot's HTTP server against hostile clients: bad lengths, slow clients, many sockets.

Every test talks raw HTTP over real sockets to a running server (the bolt app behind
``BotServer`` on a free loopback port, real Redis, fake Slack): a length that is missing,
negative or huge is answered before any body is read, a client that trickles its request
is cut off, and the process's threads and memory stay flat while it happens.
"""

from __future__ import annotations

import socket
import threading
import time

import psutil
import pytest

from tests.bot.conftest import BotHarness
from tests.support.fake_slack import get

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
MAX_CONNECTIONS = 32
SLOW_CLIENTS = 24


@pytest.fixture()
def hard_bot(slack_settings, redis_client, fake_slack):
    from bot.app import build_app
    from bot.server import BotServer

    app = build_app(slack_settings, redis=redis_client)
    server = BotServer(
        app,
        redis_client,
        host="127.0.0.1",
        port=0,
        header_timeout_s=HEADER_TIMEOUT,
        body_timeout_s=BODY_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
    ).start()
    yield BotHarness(app, server, fake_slack, redis_client, slack_settings)
    server.stop()


def connect(bot, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", bot.server.port), timeout=timeout)


def raw_request(bot, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    """Send `head` (and `body`) and read the status line; fails if no answer in `timeout`."""
    with connect(bot, timeout) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)  # socket.timeout here: the server is waiting for more
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split()[1]), data


def post_head(path: str, *headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return "\r\n".join([*lines, *headers, ""]) + "\r\n"


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) the connection within `within` seconds."""
    sock.settimeout(within)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
            # A 408/503 before the close is fine; keep reading until EOF.
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def process() -> psutil.Process:
    return psutil.Process()


@pytest.mark.parametrize("path", ["/slack/events", "/slack/commands", "/slack/actions"])
def test_negative_content_length_is_refused_at_once(hard_bot, path):
    status, _ = raw_request(hard_bot, post_head(path, "Content-Length: -1"), timeout=5)
    assert status == 400  # malformed length: refused by the HTTP parser, nothing read


def test_missing_content_length_is_411(hard_bot):
    status, _ = raw_request(hard_bot, post_head("/slack/events"), timeout=5)
    assert status == 411


def test_chunked_body_without_length_is_411(hard_bot):
    head = post_head("/slack/events", "Transfer-Encoding: chunked")
    status, _ = raw_request(hard_bot, head, b"5\r\nhello\r\n", timeout=5)
    assert status == 411


def test_huge_content_length_is_413_before_the_body_is_sent(hard_bot):
    status, _ = raw_request(
        hard_bot, post_head("/slack/events", f"Content-Length: {10**12}"), timeout=5
    )
    assert status == 413


def test_body_that_never_finishes_gets_408(hard_bot):
    with connect(hard_bot, timeout=BODY_TIMEOUT + 5) as sock:
        sock.sendall(post_head("/slack/events", "Content-Length: 1000").encode() + b"{" * 10)
        started = time.monotonic()
        data = sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 408"), data[:100]
        assert time.monotonic() - started < BODY_TIMEOUT + 3


def test_slowloris_clients_are_cut_off_and_threads_and_memory_stay_flat(hard_bot):
    """24 clients (under the connection cap) trickle their request two bytes a second; the
    server drops them all after the head timeout, without a thread each, and still answers
    everyone else meanwhile."""
    proc = process()
    assert get(hard_bot.url + "/healthz").status == 200  # warm up
    threads_before, rss_before = proc.num_threads(), proc.memory_info().rss
    socks = [connect(hard_bot) for _ in range(SLOW_CLIENTS)]
    stop = threading.Event()
    peak_threads = [threads_before]

    def trickle() -> None:
        payload = b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        for i in range(len(payload)):
            if stop.is_set():
                return
            for s in socks:
                try:
                    s.send(payload[i : i + 1])
                except OSError:
                    pass
            peak_threads.append(proc.num_threads())
            stop.wait(0.5)

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        time.sleep(0.5)
        # Everyone else is still served while the slow clients hold their sockets.
        assert get(hard_bot.url + "/healthz").status == 200
        closed = [closed_by_server(s, HEADER_TIMEOUT + 3) for s in socks]
        assert all(closed), f"{closed.count(False)} slow clients still connected"
    finally:
        stop.set()
        dripper.join(5)
        for s in socks:
            s.close()
    assert get(hard_bot.url + "/healthz").status == 200
    grown_threads = max(peak_threads) - threads_before
    grown_rss = (proc.memory_info().rss - rss_before) / 2**20
    print(f"slowloris x{SLOW_CLIENTS}: threads +{grown_threads} (peak), RSS {grown_rss:+.1f} MiB")
    assert grown_threads <= 3, "a thread per connection"
    assert grown_rss < 20


def test_bad_lengths_in_bulk_leave_memory_and_threads_flat(hard_bot):
    proc = process()
    assert get(hard_bot.url + "/healthz").status == 200
    threads_before, rss_before = proc.num_threads(), proc.memory_info().rss
    for i in range(60):
        length = ("-1", str(10**12), "")[i % 3]
        head = post_head("/slack/events", *([f"Content-Length: {length}"] if length else []))
        status, _ = raw_request(hard_bot, head, b"x" * 65536, timeout=5)
        assert status in (400, 411, 413)
    grown_threads = proc.num_threads() - threads_before
    grown_rss = (proc.memory_info().rss - rss_before) / 2**20
    print(f"60 bad lengths: threads {grown_threads:+d}, RSS {grown_rss:+.1f} MiB")
    assert grown_threads <= 3 and grown_rss < 20


def test_connections_beyond_the_cap_are_closed_at_once(hard_bot):
    proc = process()
    threads_before = proc.num_threads()
    socks = [connect(hard_bot) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        time.sleep(0.3)
        dropped = sum(closed_by_server(s, 0.3) for s in socks)
        assert dropped >= 10, f"only {dropped} of the connections over the cap were closed"
        assert proc.num_threads() - threads_before <= 3
    finally:
        for s in socks:
            s.close()
    # Once the idle ones time out the server takes new connections again.
    time.sleep(HEADER_TIMEOUT + 1)
    assert get(hard_bot.url + "/healthz").status == 200


def test_signed_requests_still_work_after_the_abuse(hard_bot):
    from tests.bot.conftest import mention

    for length in ("-1", str(10**9)):
        raw_request(hard_bot, post_head("/slack/events", f"Content-Length: {length}"))
    assert hard_bot.event(mention("Where is the printer?")).status == 200
    (task,) = hard_bot.wait_queued(1)
    assert task["kwargs"]["question"]["text"] == "Where is the printer?"
