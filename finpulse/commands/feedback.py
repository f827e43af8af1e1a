"""``finpulse feedback add --post ID --label L [--comment TEXT]``: an analyst's corrected label."""

from __future__ import annotations

import argparse
import getpass

from finpulse.commands.output import add_format, emit, open_storage
from finpulse.errors import ConfigError
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("feedback", help="record analysts' corrected labels for retraining")
    actions = parser.add_subparsers(dest="feedback_action", metavar="ACTION",
                                    parser_class=type(parser))
    actions.required = True
    add = actions.add_parser("add", help="label one post")
    add.add_argument("--post", required=True, metavar="ID")
    add.add_argument("--label", required=True, choices=["negative", "neutral", "positive"])
    add.add_argument("--comment", metavar="TEXT")
    add.add_argument("--by", metavar="NAME", help="the analyst (default: the OS user)")
    add_format(add)
    add.set_defaults(func=run_add)


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    from finpulse.storage.feedback import UnknownPost, add_feedback

    storage = open_storage(settings)
    try:
        row = add_feedback(storage, args.post, args.label, args.by or getpass.getuser(), args.comment)
    except UnknownPost as exc:
        raise ConfigError(str(exc), field="post") from exc
    finally:
        storage.dispose()
    emit(args, [row], ["id", "post_id", "label", "author", "comment", "created_at"])
    return 0
