"""Policy: validated and observed; its children come with the Policy issue."""

from __future__ import annotations

from aios.api import Policy
from aios.operator.handlers.common import register

register(Policy)
