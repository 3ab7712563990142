"""Promise 7: 200 questions at concurrency 20, through the real bot, against two answer workers
with the real model.

Everything is real except Slack itself: a redis-server, two ``lorebot worker``
processes (SmolLM2 + MiniLM over the sample handbook), and a ``lorebot bot`` process
serving the HTTP Events API with a signing secret, its Web API pointed at the local fake
Slack (tests/support/fake_slack.py). Each question is an ``app_mention`` event posted to the
bot's ``/slack/events``, signed as Slack signs it (the Slack tests' ``sign``), and is
counted where the asker sees it: its placeholder's final ``chat.update`` in the fake
Slack, or the private rate-limit note (``chat.postEphemeral``).

The load: ``--hot`` questions come first, all from one user, so that user exceeds
``slack.user_rate_per_min`` (``--user-rate``, default 6) within the first seconds; the bot
must answer the first ones and give the rest the rate-limit note and no task. The other
questions come from many users, none of whom asks more than half the limit in the whole
run, so none may be refused. The workspace limit is set out of reach (only the per-user
limit is measured). At most ``-c`` questions are in flight (sent, not yet answered or
refused); with more in flight than workers, placeholders must show the queue position.

Reported: sent / rate-limited / answered / lost / duplicated / errors, queue positions
shown and the largest, tasks the workers ran (Redis result keys: one per answered
question, none for refused ones), latency p50/p95 (signed event -> placeholder, signed
event -> final update), throughput, and the workers' resident memory sampled every second
(flat = the last quarter's mean within 10% of the second quarter's; the first is warm-up).

    .venv/bin/python bench/reliability_load.py                  # 200 questions, 20 in flight
    .venv/bin/python bench/reliability_load.py -n 40 -c 8       # quicker
    .venv/bin/python bench/reliability_load.py --direct         # tasks straight to Redis, no bot

Writes bench/results/reliability_load.json; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Redis,
    Worker,
    console,
    exit_cleanly_on_sigterm,
    loadavg,
    make_workload,
    save,
    summary,
)

HOT_USER = "UHOTUSER01"
#: The workspace limit during the load: out of reach, so only the per-user limit refuses.
TEAM_RATE = 100_000
RESULT_PREFIX = "celery-task-meta-"


def worker_rss_mib(workers: list[Worker]) -> float:
    """Resident memory of every worker process and its pool children, summed (MiB)."""
    import psutil

    total = 0
    for w in workers:
        try:
            root = psutil.Process(w.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class RssSampler:
    """Samples the workers' (and optionally the bot's) RSS once a second on a thread."""

    def __init__(self, workers: list[Worker], bot: Any = None) -> None:
        self.workers = workers
        self.bot = bot
        self.samples: list[float] = []
        self.bot_samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(worker_rss_mib(self.workers))
            if self.bot is not None:
                self.bot_samples.append(self.bot.rss_mib())

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict[str, Any]:
        # The first quarter is warm-up (pool processes loading the model, first KV caches):
        # memory is flat when the last quarter is within 10% of the second.
        samples = self.samples
        quarter = max(1, len(samples) // 4)
        second_q = (
            sum(samples[quarter : 2 * quarter]) / quarter if len(samples) >= 2 * quarter else 0.0
        )
        last_q = sum(samples[-quarter:]) / quarter if samples else 0.0
        out = {
            "second_quarter_mean": round(second_q),
            "last_quarter_mean": round(last_q),
            "max": round(max(samples)) if samples else None,
            "samples": len(samples),
            "series": [round(v) for v in samples[:: max(1, len(samples) // 40)]],
            "flat": bool(samples) and last_q <= second_q * 1.10,
        }
        if self.bot_samples:
            out["bot"] = {
                "first": round(self.bot_samples[0]),
                "last": round(self.bot_samples[-1]),
                "max": round(max(self.bot_samples)),
            }
        return out


def start_workers(workload, redis_url: str, env: dict[str, str], n: int) -> list[Worker]:
    workers = [
        Worker(
            workload.data_dir,
            redis_url,
            workload.workdir / f"worker{i}.log",
            threads=1,
            extra_env=env,
        )
        for i in range(n)
    ]
    for w in workers:
        w.wait_ready()
    return workers


def worker_errors(workers: list[Worker]) -> list[str]:
    return [
        "worker log: " + line for w in workers for line in w.log().splitlines() if " ERROR " in line
    ]


# ----------------------------------------------------------------------------- the load plan
def askers(n: int, hot: int, user_rate: int, concurrency: int = 1) -> list[str]:
    """Who asks each question: ``hot`` from HOT_USER first, then many users in turn (at
    least as many as are in flight), each asking at most half the per-user limit in the
    whole run, so none of them can be refused however fast the answers come."""
    hot = min(hot, n)
    regular = n - hot
    per_user = max(1, user_rate // 2)
    n_users = max(concurrency, math.ceil(regular / per_user), 1)
    return [HOT_USER] * hot + [f"ULOAD{k % n_users:05d}" for k in range(regular)]


def expected_refusals(sent_at: list[float], limit: int, window_s: float = 60.0) -> int:
    """The limiter's rule replayed on one user's send times: a question is refused when
    ``limit`` of that user's accepted questions arrived in the window before it."""
    accepted: list[float] = []
    refused = 0
    for t in sorted(sent_at):
        if sum(1 for a in accepted if a > t - window_s) >= limit:
            refused += 1
        else:
            accepted.append(t)
    return refused


def default_hot(n: int, user_rate: int) -> int:
    return user_rate + max(2, n // 10)


# ----------------------------------------------------------------------------- through the bot
def run_load(
    n: int,
    concurrency: int,
    *,
    max_tokens: int = 64,
    workers_n: int = 2,
    timeout_s: float = 3600,
    user_rate: int = 6,
    hot: int | None = None,
    stall_s: float = 300,
) -> dict[str, Any]:
    """Start Redis, the fake Slack, ``workers_n`` workers and the bot; send ``n`` signed
    mentions keeping ``concurrency`` in flight; measure what reached the fake Slack."""
    import redis as redis_lib

    from lorebot import contracts
    from lorebot.contracts import QUEUE_ANSWER
    from tests.reliability.workers_harness import BotProcess, EventAsker, slack_env
    from tests.support.fake_slack import FakeSlack

    hot = default_hot(n, user_rate) if hot is None else hot
    who = askers(n, hot, user_rate, concurrency)
    started_load = loadavg()
    workload = make_workload("sample", limit=None, answerable_only=True)
    redis = Redis(workload.workdir)
    fake = FakeSlack().start()
    workers: list[Worker] = []
    bot: BotProcess | None = None
    sampler: RssSampler | None = None
    try:
        workers = start_workers(
            workload,
            redis.url,
            slack_env(fake, LOREBOT_MODEL__MAX_TOKENS=str(max_tokens)),
            workers_n,
        )
        bot = BotProcess(
            workload.data_dir,
            redis.url,
            fake,
            workload.workdir / "bot.log",
            LOREBOT_SLACK__USER_RATE_PER_MIN=str(user_rate),
            LOREBOT_SLACK__TEAM_RATE_PER_MIN=str(TEAM_RATE),
        ).wait_ready()
        sampler = RssSampler(workers, bot).start()
        asker = EventAsker(bot, fake, user_limit=user_rate, team_limit=TEAM_RATE)

        t0 = time.monotonic()
        deadline = t0 + timeout_s
        progress_at, last_done, i = t0, -1, 0
        stalled = False
        while time.monotonic() < deadline:
            done = sum(1 for s in asker.refresh().values() if s.finished)
            if done != last_done:
                progress_at, last_done = time.monotonic(), done
            while i < n and i - done < concurrency:
                asker.ask(workload.questions[i % len(workload.questions)], who[i])
                i += 1
            if i >= n and done >= n:
                break
            if time.monotonic() - progress_at > stall_s:
                stalled = True
                break
            time.sleep(0.2)
        time.sleep(3)  # let a late duplicate arrive
        sent = list(asker.refresh().values())
        sampler.stop()

        r = redis_lib.Redis.from_url(redis.url)
        task_ids = {
            k.decode()[len(RESULT_PREFIX) :] for k in r.scan_iter(RESULT_PREFIX + "*", count=1000)
        }
        left_in_queue = int(r.llen(QUEUE_ANSWER))
        left_pending = int(r.hlen(contracts.PENDING))
        r.close()
        bot_log = bot.log()
        errors = worker_errors(workers) + ["bot log: " + line for line in bot.problems()]
    finally:
        if sampler is not None:
            sampler.stop()
        if bot is not None:
            bot.stop()
        for w in workers:
            w.close()
        fake.stop()
        redis.close()
        workload.close()

    answered = [s for s in sent if s.finals]
    refused = [s for s in sent if s.rate_limited]
    hot_sent = [s for s in sent if s.user == HOT_USER]
    for s in sent:
        if s.status != 200:
            errors.append(f"{s.ts}: the bot answered HTTP {s.status}")
        errors += [
            f"{s.ts}: placeholder became an error: {c.args.get('text', '')[:200]}" for c in s.sorry
        ]
        if not s.rate_limited:
            errors += [
                f"{s.ts}: unexpected note to {s.user}: {c.args.get('text', '')[:200]}"
                for c in s.notes
            ]
    # The question id each answer carries (its feedback buttons' value) vs the tasks run.
    answered_ids = {s.finals[0].args["blocks"][-1]["elements"][0]["value"] for s in answered}
    positions = [s.queue_position for s in sent if s.queue_position is not None]
    first_at = min((s.at for s in sent), default=0.0)
    last_at = max((c.at for s in sent for c in [*s.finals, *s.sorry, *s.notes]), default=first_at)
    elapsed = last_at - first_at

    result: dict[str, Any] = {
        "mode": "bot",
        "questions": n,
        "concurrency": concurrency,
        "workers": workers_n,
        "max_tokens": max_tokens,
        "user_rate_per_min": user_rate,
        "team_rate_per_min": TEAM_RATE,
        "users": len({s.user for s in sent}),
        "sent": len(sent),
        "rate_limited": len(refused),
        "answered": len(answered),
        "lost": sum(1 for s in sent if not (s.finals or s.sorry or s.rate_limited)),
        "duplicated": sum(1 for s in sent if len(s.finals) > 1 or len(s.placeholders) > 1),
        "errors": errors[:20],
        "error_count": len(errors),
        "hot_user": {
            "sent": len(hot_sent),
            "answered": sum(1 for s in hot_sent if s.finals),
            "rate_limited": sum(1 for s in hot_sent if s.rate_limited),
            "expected_rate_limited": expected_refusals([s.at for s in hot_sent], user_rate),
            "burst_s": round(max(s.at for s in hot_sent) - min(s.at for s in hot_sent), 2)
            if hot_sent
            else None,
        },
        "rate_limited_other_users": sum(1 for s in refused if s.user != HOT_USER),
        # A refused question must get nothing else: no placeholder, no answer, no task.
        "rate_limited_with_placeholder_or_answer": sum(
            1 for s in refused if s.placeholders or s.finals
        ),
        "tasks_run": len(task_ids),
        "tasks_without_answer": len(task_ids - answered_ids),
        "left_in_queue": left_in_queue,
        "left_pending_in_watchdog": left_pending,
        "queue_positions": {
            "shown": len(positions),
            "max": max(positions, default=None),
            "placeholders": sum(1 for s in sent if s.placeholders),
        },
        "bot_log": {
            "rate_limited_lines": bot_log.count("rate limited scope="),
            "submitted_lines": bot_log.count(" submitted collections="),
            "warnings": [line for line in bot_log.splitlines() if " WARNING " in line][:20],
        },
        "latency_s": summary([s.finals[0].at - s.at for s in answered]),
        "placeholder_ms": summary(
            [(s.placeholders[0].at - s.at) * 1000 for s in sent if s.placeholders]
        ),
        "rate_limit_note_ms": summary([(s.notes[0].at - s.at) * 1000 for s in refused]),
        "throughput_qps": round(len(answered) / elapsed, 3) if elapsed > 0 else None,
        "elapsed_s": round(elapsed, 1),
        "stalled": stalled,
        "rss_mib": sampler.report() if sampler else {},
        "started_load": started_load,
    }
    result["checks"] = checks(result)
    return result


def checks(r: dict[str, Any]) -> dict[str, bool]:
    """Promise 7 through the bot, one named check each (all must hold)."""
    hot = r["hot_user"]
    return {
        "answered = sent - rate-limited": r["answered"] == r["sent"] - r["rate_limited"],
        "none lost": r["lost"] == 0,
        "none duplicated": r["duplicated"] == 0,
        "no errors": r["error_count"] == 0,
        "the hot user was rate-limited as the limit says": hot["rate_limited"]
        == hot["expected_rate_limited"]
        > 0,
        "nobody else was rate-limited": r["rate_limited_other_users"] == 0,
        "refused questions got no placeholder or answer": r[
            "rate_limited_with_placeholder_or_answer"
        ]
        == 0,
        "one task per answered question, none for refused": (
            r["tasks_run"] == r["answered"] and r["tasks_without_answer"] == 0
        ),
        "a queue position was shown": (r["queue_positions"]["shown"] or 0) > 0,
        "memory flat": bool(r["rss_mib"].get("flat")),
    }


# ----------------------------------------------------------------------------- straight to Redis
def run_load_direct(
    n: int, concurrency: int, *, max_tokens: int = 64, workers_n: int = 2, timeout_s: float = 3600
) -> dict[str, Any]:
    """The earlier mode: tasks submitted to Redis the way the bot would (no bot, so no rate
    limiting and no queue positions); isolates the workers' share of the latency."""
    from tests.reliability.workers_harness import Asker, slack_env
    from tests.support.fake_slack import FakeSlack

    started_load = loadavg()
    workload = make_workload("sample", limit=None, answerable_only=True)
    redis = Redis(workload.workdir)
    fake = FakeSlack().start()
    workers: list[Worker] = []
    sampler: RssSampler | None = None
    try:
        workers = start_workers(
            workload,
            redis.url,
            slack_env(fake, LOREBOT_MODEL__MAX_TOKENS=str(max_tokens)),
            workers_n,
        )
        sampler = RssSampler(workers).start()
        asker = Asker(fake, redis.url)
        sent_at: dict[str, float] = {}
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        i = 0
        while time.monotonic() < deadline:
            done = sum(1 for v in asker.finals().values() if v)
            while i < n and i - done < concurrency:
                qid = asker.ask(workload.questions[i % len(workload.questions)])
                sent_at[qid] = time.time()
                i += 1
            if i >= n and done >= n:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        time.sleep(3)  # let a late duplicate arrive
        sampler.stop()
        counts = asker.finals()
        first_final: dict[str, float] = {}
        by_ts = {ts: qid for qid, ts in asker.placeholders.items()}
        for c in fake.calls_to("chat.update"):
            qid = by_ts.get(c.args.get("ts"))
            if qid and (c.args.get("blocks") or [{}])[-1].get("type") == "actions":
                first_final.setdefault(qid, c.at)
        latencies = [first_final[q] - sent_at[q] for q in first_final if q in sent_at]
        errors = asker.errors() + worker_errors(workers)
    finally:
        if sampler is not None:
            sampler.stop()
        for w in workers:
            w.close()
        fake.stop()
        redis.close()
        workload.close()
    return {
        "mode": "direct",
        "questions": n,
        "concurrency": concurrency,
        "workers": workers_n,
        "max_tokens": max_tokens,
        "sent": len(sent_at),
        "answered": sum(1 for v in counts.values() if v),
        "lost": sum(1 for v in counts.values() if not v),
        "duplicated": sum(1 for v in counts.values() if v > 1),
        "errors": errors[:20],
        "error_count": len(errors),
        "latency_s": summary(latencies),
        "throughput_qps": round(len(latencies) / elapsed, 3) if elapsed else None,
        "elapsed_s": round(elapsed, 1),
        "rss_mib": sampler.report() if sampler else {},
        "started_load": started_load,
    }


# ----------------------------------------------------------------------------- output
def _pair(stats: dict[str, Any], spec: str) -> str:
    """The "p50 / p95" of a summary(), "–" for a value it does not have (no samples)."""
    return " / ".join(
        "–" if stats.get(k) is None else format(stats[k], spec) for k in ("p50", "p95")
    )


def _rss_row(rss: dict[str, Any]) -> str:
    return (
        f"{rss.get('second_quarter_mean')} → {rss.get('last_quarter_mean')}"
        f" ({'flat' if rss.get('flat') else 'GROWING'})"
    )


def show(result: dict[str, Any]) -> None:
    from rich.table import Table

    via = "through the bot" if result["mode"] == "bot" else "straight to Redis"
    t = Table(
        title=f"reliability load {via}: {result['questions']} questions, concurrency "
        f"{result['concurrency']}, {result['workers']} workers"
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    lat = result["latency_s"]
    rss = result["rss_mib"]
    if result["mode"] == "direct":
        rows = [
            ("sent / answered", f"{result['sent']} / {result['answered']}"),
            ("lost / duplicated", f"{result['lost']} / {result['duplicated']}"),
            ("errors", str(result["error_count"])),
            ("latency p50 / p95 (s)", _pair(lat, ".1f")),
            ("throughput (questions/s)", f"{result['throughput_qps']}"),
            ("elapsed (s)", f"{result['elapsed_s']}"),
            ("workers' RSS 2nd→last quarter (MiB)", _rss_row(rss)),
        ]
    else:
        hot = result["hot_user"]
        qp = result["queue_positions"]
        ph = result["placeholder_ms"]
        bot_rss = rss.get("bot") or {}
        rows = [
            (
                "sent / rate-limited / answered",
                f"{result['sent']} / {result['rate_limited']} / {result['answered']}",
            ),
            (
                "lost / duplicated / errors",
                f"{result['lost']} / {result['duplicated']} / {result['error_count']}",
            ),
            (
                f"hot user: sent / answered / rate-limited (expected) in {hot['burst_s']} s",
                f"{hot['sent']} / {hot['answered']} / {hot['rate_limited']} "
                f"({hot['expected_rate_limited']})",
            ),
            (
                f"other {result['users'] - 1} users: rate-limited",
                str(result["rate_limited_other_users"]),
            ),
            (
                "rate-limited with a placeholder or answer",
                str(result["rate_limited_with_placeholder_or_answer"]),
            ),
            (
                "tasks run (Redis) / without an answer",
                f"{result['tasks_run']} / {result['tasks_without_answer']}",
            ),
            (
                "placeholders with a queue position / max N",
                f"{qp['shown']} of {qp['placeholders']} / {qp['max']}",
            ),
            ("signed event → placeholder p50 / p95 (ms)", _pair(ph, ".0f")),
            ("signed event → final update p50 / p95 (s)", _pair(lat, ".1f")),
            ("throughput (answers/s)", f"{result['throughput_qps']}"),
            ("elapsed (s)", f"{result['elapsed_s']}" + (" (STALLED)" if result["stalled"] else "")),
            ("workers' RSS 2nd→last quarter (MiB)", _rss_row(rss)),
            ("bot RSS first → last (MiB)", f"{bot_rss.get('first')} → {bot_rss.get('last')}"),
        ]
    for name, value in rows:
        t.add_row(name, value)
    console.print(t)
    failed = [name for name, ok in (result.get("checks") or {}).items() if not ok]
    if failed:
        console.print("[red]failed: " + "; ".join(failed) + "[/]")
    for line in result["errors"][:5]:
        console.print(f"[red]{line}[/]")


def main() -> None:
    exit_cleanly_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--questions", type=int, default=200)
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--user-rate", type=int, default=6, help="slack.user_rate_per_min for the bot (default 6)"
    )
    ap.add_argument(
        "--hot",
        type=int,
        default=None,
        help=(
            "questions from the one user who exceeds the limit (default: user rate + n/10, at "
            "least 2 over)"
        ),
    )
    ap.add_argument(
        "--direct", action="store_true", help="submit tasks straight to Redis, without the bot"
    )
    args = ap.parse_args()
    if args.direct:
        result = run_load_direct(args.questions, args.concurrency, max_tokens=args.max_tokens)
        failed = bool(result["lost"] or result["duplicated"] or result["error_count"])
    else:
        result = run_load(
            args.questions,
            args.concurrency,
            max_tokens=args.max_tokens,
            user_rate=args.user_rate,
            hot=args.hot,
        )
        failed = not all(result["checks"].values())
    show(result)
    save("reliability_load", result, started_load=result.pop("started_load"))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
