"""Crash-safe file writing (re-exported from :mod:`interventions.atomic`, shared by all layers)."""

from interventions.atomic import *  # noqa: F401,F403
from interventions.atomic import __all__  # noqa: F401
