"""Every sentence the bot says to people in Slack, in one place.

Plain strings and small formatting helpers only (mrkdwn). Rendering into Block Kit is
:mod:`bot.render`; deciding when to say what is :mod:`bot.listeners`.
"""

from __future__ import annotations

HELP_ASK = (
    "Ask me about anything in our documents, e.g. "
    "`@lorebot how many days of annual leave do I get?`, "
    "a direct message, or `/ask how do I report a lost laptop?`. Reply in my thread to follow up."
)
EMPTY_QUESTION = "I didn't get a question there. " + HELP_ASK
NO_WORDS = (
    "I can only answer questions written in words (emoji alone don't tell me what to look up). "
    + HELP_ASK
)
NOT_IN_CHANNEL = (
    "I'm not a member of this channel, so I can't post the answer here. "
    "Invite me with `/invite @lorebot`, or send me a direct message."
)
DM_NOT_MAPPED = (
    "I can't answer direct messages yet: no document collections are open to them. "
    "A lorebot admin must set `slack.dm_collections` (or `slack.default_collections`). "
    "Until then, ask me in a channel that has been set up for questions."
)
BAD_CHANNEL_REF = (
    "I couldn't read that channel. Use `/lorebot channel set #channel collection-a,collection-b`."
)

ADMIN_ONLY = (
    "Sorry, `/lorebot` is for lorebot admins only. "
    "To ask a question use `/ask …` or mention me; an admin can add you to `slack.admin_user_ids`."
)
ADMIN_HELP = (
    "*`/lorebot` admin commands*\n"
    "• `status`: index version, documents and chunks, adapter, last nightly result, "
    "queue depth, live workers\n"
    "• `reindex [collection]`: rebuild the index (progress is posted in a thread)\n"
    "• `refresh`: run the nightly model refresh now\n"
    "• `adapters list` · `adapters promote <version>` · `adapters rollback`\n"
    "• `channel show [#channel]` · `channel set [#channel] <collection,…|all>` · "
    "`channel reset [#channel]`\n"
    "• to add documents, share files in the admin channel with `collection: NAME` in the message"
)
STREAMING_NOTE = ":writing_hand: _writing…_"
FEEDBACK_THANKS_UP = "Thanks! I've recorded that this answer helped. :thumbsup:"
FEEDBACK_THANKS_DOWN = (
    "Thanks for telling me. I've recorded that this answer was not helpful; "
    "it goes into tonight's evaluation. :thumbsdown:"
)
CHANNEL_SET_USAGE = (
    "Tell me which collections: `/lorebot channel set [#channel] handbook,it` (or `all`)."
)
FEEDBACK_MISSING = "Thanks, but I couldn't find that answer any more, so the vote was not recorded."
#: The optional "suggest the right answer" modal a 👎 opens (title ≤ 24 characters).
SUGGEST_TITLE = "Suggest the right answer"[:24]
SUGGEST_SUBMIT = "Send"
SUGGEST_CLOSE = "Skip"
SUGGEST_INTRO = (
    "Optional: if you know the right answer, write it here. An admin reviews it before "
    "I learn from it."
)
SUGGEST_LABEL = "The right answer"
SUGGEST_PLACEHOLDER = (
    "e.g. Full-time staff get 27 days of annual leave a year (Annual Leave Policy)."
)
SUGGEST_THANKS = "Thanks! An admin will review your suggested answer before I learn from it."
SUGGEST_EMPTY = "Write the right answer, or press Skip."
SUGGEST_TOO_LONG = "Please keep it under {limit} characters."
SUGGEST_NO_VOTE = "I couldn't find your 👎 on that answer any more, so I can't keep this."
SUGGEST_FULL = "Too many suggestions are waiting for an admin right now; please try again later."

INTERNAL_ERROR = "something went wrong on my side"
NO_WORKER = "no lorebot worker is running, so nobody could answer"
WORKER_CRASHED = "the worker answering it stopped with an error ({kind})"
TIMED_OUT = "no answer arrived within {minutes} min (workers overloaded or stuck)"
QUEUE_UNAVAILABLE = "I couldn't reach the work queue (Redis)"


def thousands(n: int) -> str:
    return f"{n:,}"


def searching(n_documents: int | None) -> str:
    if n_documents is None:
        return "Searching…"
    noun = "document" if n_documents == 1 else "documents"
    return f"Searching {thousands(n_documents)} {noun}…"


def queue_position(position: int) -> str:
    return f"All workers are busy: you are number {position} in the queue."


def truncated(limit: int, original: int) -> str:
    return (
        f"Your message was {thousands(original)} characters long; "
        f"I read only the first {thousands(limit)}."
    )


def rate_limited(scope: str, limit: int, retry_after_s: float) -> str:
    wait = max(1, int(round(retry_after_s)))
    when = f"{wait} seconds" if wait != 1 else "1 second"
    if scope == "user":
        return (
            f"You've asked {limit} questions in the last minute, which is my limit per person. "
            f"Please try again in {when}."
        )
    return (
        f"This workspace has asked {limit} questions in the last minute, which is all I can take. "
        f"Please try again in {when}."
    )


def error_title() -> str:
    return ":warning: *Sorry, I couldn't answer this.*"


def error_reference(ref_id: str) -> str:
    return f"Reference id `{ref_id}`: an admin can find it in the bot and worker logs."


def answer_posted_in_thread(user: str, question: str) -> str:
    return f"<@{user}> asked: {question}"


def reindex_started(user: str, collection: str | None) -> str:
    what = f"collection `{collection}`" if collection else "all collections"
    return (
        f":arrows_counterclockwise: <@{user}> started a reindex of {what}. "
        "Progress follows in this thread."
    )


def refresh_started(user: str) -> str:
    return (
        f":arrows_counterclockwise: <@{user}> started the model refresh. "
        "The result follows in this thread."
    )


def job_without_thread(task_id: str) -> str:
    return f"\n(I'm not in this channel, so progress goes to the worker log; task `{task_id}`.)"


def channel_not_mapped(channel: str) -> str:
    return (
        f"<#{channel}> isn't set up for questions yet, so I haven't searched anything. "
        f"A lorebot admin must choose which document collections it may search: "
        f"`/lorebot channel set <#{channel}> collection-a,collection-b` (or `all`)."
    )


def channel_show(channel: str, collections: list[str] | None, source: str) -> str:
    what = (
        "all collections"
        if collections is None
        else ", ".join(f"`{c}`" for c in collections) or "no collections"
    )
    return f"<#{channel}> may search {what} ({source})."


def channel_set(channel: str, collections: list[str] | None) -> str:
    what = "all collections" if collections is None else ", ".join(f"`{c}`" for c in collections)
    return f"Done: questions from <#{channel}> now search {what}."


def channel_reset(channel: str) -> str:
    return f"Done: <#{channel}> is back to the configured collections."


def unknown_command(text: str) -> str:
    return f"I don't know `{text}`.\n" + ADMIN_HELP


# ---------------------------------------------------------------- files shared by admins
UPLOAD_SYNTAX = "`collection: NAME` in the message you share the file with"
UPLOAD_ADMIN_ONLY = (
    "Thanks, but only lorebot admins can add documents by sharing files here, so I've left "
    "this one alone. An admin can add it for you, or add you to `slack.admin_user_ids`."
)


def upload_bad_collection(typed: str) -> str:
    return (
        f"I can't use `{typed}` as a collection name, so I haven't indexed anything. Share the "
        f"file again with {UPLOAD_SYNTAX}, using letters, digits, `-`, `_` or `.`."
    )


def upload_received(n_files: int, collection: str, defaulted: bool) -> str:
    files = "1 file" if n_files == 1 else f"{n_files} files"
    text = f":inbox_tray: Got {files} for collection `{collection}`; indexing follows here."
    if defaulted:
        text += (
            f"\nYou didn't name a collection, so I'm using the default one, `{collection}`. "
            f"Next time write {UPLOAD_SYNTAX} to choose."
        )
    return text
