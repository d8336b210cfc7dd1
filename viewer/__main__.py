"""``python -m viewer fetch|build``: the OHIF viewer for dicomflow (see :mod:`viewer`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from viewer import ohif
from viewer.build import build
from viewer.config import Oidc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m viewer", description="the OHIF viewer for dicomflow")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help=f"fetch and unpack {ohif.PACKAGE}@{ohif.VERSION} (npm pack, integrity-checked)")
    b = sub.add_parser("build", help="assemble a servable site with an app-config.js for a DICOMweb root")
    b.add_argument("--dicomweb", required=True, help="the DICOMweb root, e.g. http://127.0.0.1:7071/api/dicomweb")
    b.add_argument("--out", required=True, help="output folder (replaced)")
    b.add_argument("--authority", default=None, help="OpenID issuer for sign-in (Entra ID, or the devhost's)")
    b.add_argument("--client-id", default=None, help="the viewer's client id at that issuer")
    b.add_argument("--scope", default="openid profile", help="scopes to request (Entra: add the API's scope)")
    b.add_argument("--copy", action="store_true", help="copy files instead of linking them (for deployment)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(ohif.fetch())
            return 0
        if bool(args.authority) != bool(args.client_id):
            print("viewer: --authority and --client-id go together", file=sys.stderr)
            return 2
        oidc = Oidc(args.authority, args.client_id, args.scope) if args.authority else None
        out = build(Path(args.out), args.dicomweb, oidc=oidc, copy=args.copy)
    except ohif.FetchError as exc:
        print(f"viewer: {exc}", file=sys.stderr)
        return 1
    print(f"viewer site in {out} for {args.dicomweb}" + (f" (sign-in: {args.authority})" if oidc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
