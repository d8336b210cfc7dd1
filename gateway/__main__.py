"""``python -m gateway`` serves in the foreground; ``up`` / ``down`` run it in the background."""

import sys

from gateway.server import main


def _cli(argv: list[str]) -> int:
    if argv and argv[0] in ("up", "down"):
        from gateway import process
        from shared.config import get_settings

        if argv[0] == "down":
            return process.down()
        cfg = get_settings().gateway
        return process.up(cfg.port, cfg.host)
    if argv:
        print("usage: python -m gateway [up|down]   (no argument: serve in the foreground)", file=sys.stderr)
        return 2
    return main()


raise SystemExit(_cli(sys.argv[1:]))
