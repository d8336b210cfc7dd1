"""``routing``: Event Grid trigger on study/series stable, image and inference events.

:func:`shared.routing.service.handle_event` applies the rules from the config
container through the delivery ledger; it raises when deliveries wait for a retry,
so Event Grid delivers the event again (its retry schedule is the backoff clock).
"""

from __future__ import annotations

import azure.functions as func

from shared.routing.service import handle_event
from shared.services import get_services

bp = func.Blueprint()


@bp.function_name("routing")
@bp.event_grid_trigger(arg_name="event")
def routing(event: func.EventGridEvent) -> None:
    # CloudEvents 1.0 arrive as a CloudEvent (``type``); Event Grid schema as ``event_type``.
    kind = getattr(event, "event_type", None) or getattr(event, "type", None)
    handle_event(str(kind), event.get_json(), get_services())
