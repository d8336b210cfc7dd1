"""``python -m devhost token``: print a signed access token of the running stack's development issuer.

    curl -H "Authorization: Bearer $(python -m devhost token)" http://127.0.0.1:7071/api/...

``--role`` (repeatable; default reader) sets the ``roles`` claim, ``--no-role`` leaves it empty,
``--minutes`` the lifetime, ``--user`` the name (and so the object id) audit lines show,
``--audience`` the ``aud`` claim (default ``api://devhost``). ``--rotate`` first makes a new signing key
current (the previous one stays published, so earlier tokens keep working until they expire).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devhost import issuer, runtime, state

HELP = "print a signed bearer token of the local development issuer (--role reader|writer|admin)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", action="append", choices=issuer.ROLES, default=None,
                        help="app role in the token (repeatable; default: reader)")
    parser.add_argument("--no-role", action="store_true", help="a token without any role (to see 403s)")
    parser.add_argument("--minutes", type=float, default=60.0, help="lifetime in minutes (default 60)")
    parser.add_argument("--user", default="dev", help="user name; the object id (oid) is derived from it")
    parser.add_argument("--audience", default=issuer.DEFAULT_AUDIENCE, help="aud claim (default api://devhost)")
    parser.add_argument("--issuer", default=None,
                        help="issuer URL (default: the running devhost's, from the state dir)")
    parser.add_argument("--rotate", action="store_true", help="make a new signing key current first")
    runtime.add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    url = args.issuer
    if url is None:
        st = state.read_json(state.state_path(state_dir))
        if not isinstance(st, dict) or not state.pid_alive(st.get("pid")) or not st.get("issuer"):
            print(f"devhost: no running devhost in {state_dir}: start it ('make up' or 'python -m devhost up'), "
                  "or pass --issuer URL", file=sys.stderr)
            return 1
        url = str(st["issuer"])
    if args.minutes <= 0:
        print("devhost: --minutes must be positive", file=sys.stderr)
        return 2
    if args.rotate:
        issuer.rotate(state_dir)
    roles = [] if args.no_role else (args.role or ["reader"])
    print(issuer.mint(state_dir, url, roles=roles, audience=args.audience, minutes=args.minutes, user=args.user))
    return 0
