"""AutomationIntent: validated and observed; its children come with the AutomationIntent issue."""

from __future__ import annotations

from aios.api import AutomationIntent
from aios.operator.handlers.common import register

register(AutomationIntent)
