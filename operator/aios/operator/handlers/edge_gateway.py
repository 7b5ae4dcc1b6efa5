"""EdgeGateway: validated and observed; its children come with the EdgeGateway issue."""

from __future__ import annotations

from aios.api import EdgeGateway
from aios.operator.handlers.common import register

register(EdgeGateway)
