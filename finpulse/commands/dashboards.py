"""``finpulse dashboards``: generate the Grafana dashboards, or publish them to a Grafana.

    finpulse dashboards build [--check]            write dashboards/json/*.json from the code
    finpulse dashboards push --url URL --token T   create/update them in a running Grafana
"""

from __future__ import annotations

import argparse
import os

from finpulse.errors import ConfigError
from finpulse.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dashboards", help="generate the Grafana dashboards or push them to a Grafana",
                            description="Grafana dashboards as code (dashboards/).")
    actions = parser.add_subparsers(dest="dashboards_action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    build = actions.add_parser("build", help="write dashboards/json/*.json from dashboards/*.py")
    build.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    push = actions.add_parser("push", help="create or update the dashboards in a running Grafana")
    push.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://localhost:3000")
    push.add_argument("--token", default=None,
                      help="a service-account token (default: $GRAFANA_TOKEN)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.dashboards_action == "build":
        from dashboards.build import main

        return main(["--check"] if args.check else [])
    from dashboards.push import push

    token = args.token or os.environ.get("GRAFANA_TOKEN")
    if not token:
        raise ConfigError("no Grafana token: pass --token or set GRAFANA_TOKEN", field="token")
    pushed, missing = push(args.url, token)
    for board in pushed:
        print(f"{board.uid}: version {board.version} ({board.title}) {board.url}")
    for uid in missing:
        print(f"warning: datasource {uid!r} does not exist in this Grafana; the dashboards expect it "
              "(see dashboards/provisioning/datasources/finpulse.yaml)")
    return 0
