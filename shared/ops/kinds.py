"""The operation types and the handler that runs each: the one list (add a type here, nowhere else).

Handlers are named as ``module:function`` and imported when a step of that type runs, so this module
imports nothing of the features it lists.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from shared.ops.store import Operation
    from shared.services import Services

#: Reindexing existing instances for new extended query tags (:mod:`shared.extended.reindex`).
REINDEX: Final = "reindex"

HANDLERS: Final[dict[str, str]] = {
    REINDEX: "shared.extended.reindex:step",
}


@dataclass(slots=True)
class Step:
    """What one step of an operation did: whether it is finished (and failed), its progress, where the next
    step resumes, and the results so far (they replace the operation's)."""

    done: bool
    percent: int
    cursor: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    #: Seconds before the next step may run (0: at once).
    wait: float = 0.0


Handler = Callable[["Services", "Operation", float], Step]


def handler(type_: str) -> Handler:
    """The step function of an operation type (``KeyError`` for a type this version does not know)."""
    module, _, name = HANDLERS[type_].partition(":")
    fn: Handler = getattr(importlib.import_module(module), name)
    return fn
