"""``inference``: Event Grid trigger on ``Dicom.SeriesStable`` of source (not derived) series.

The subscription (infra/events.json ``inference-series-stable``) filters on
``data.derived`` and ``data.modality``; :func:`shared.inference.service.handle_event`
checks again, runs the registry's models and writes SEG + SR to the inbox.
"""

from __future__ import annotations

import azure.functions as func

from shared.inference.service import handle_event
from shared.services import get_services

bp = func.Blueprint()


@bp.function_name("inference")
@bp.event_grid_trigger(arg_name="event")
def inference(event: func.EventGridEvent) -> None:
    handle_event(event.get_json(), get_services())
