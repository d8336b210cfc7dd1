"""Run checkov with PLY's parse tables built once per thread, not once per JSONPath (run in .venv-infra).

checkov's Bicep graph renders every attribute that refers to a variable or parameter by a JSONPath, and its
JSONPath library (bc-jsonpath-ng) rebuilds the PLY grammar tables on every new path: about a quarter of a second of
CPU each, a few hundred times for infra/, most of checkov's run. The grammar is the same every time and its
productions hold no state, so each thread builds it once here. Same checks, same results (compared on infra/
when this was written: the same passed, failed and skipped checks, 5 s of CPU instead of 16). Usage:
``.venv-infra/bin/python tests/infra/checkov_cached.py <checkov arguments>`` (tests/infra/bicepcheck.py run_checkov).
"""

from __future__ import annotations

import sys
import threading
import warnings
from typing import Any

import ply.yacc

_build = ply.yacc.yacc
_local = threading.local()


def _yacc_once(*args: Any, **kwargs: Any) -> Any:
    key = (type(kwargs.get("module")), kwargs.get("start"), kwargs.get("tabmodule"))
    parsers = _local.__dict__.setdefault("parsers", {})
    if key not in parsers:
        parsers[key] = _build(*args, **kwargs)
    return parsers[key]


ply.yacc.yacc = _yacc_once

if __name__ == "__main__":
    from checkov.main import Checkov

    sys.argv[0] = "checkov"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=SyntaxWarning)
        sys.exit(Checkov().run())
