"""ModelDeployment: validated and observed; its children come with the ModelDeployment issue."""

from __future__ import annotations

from aios.api import ModelDeployment
from aios.operator.handlers.common import register

register(ModelDeployment)
