"""Imports every ``*_metrics.py`` module here so that it registers with BasicSR."""
from dsmnet_arch.utils import import_modules

_modules = import_modules(__name__, __path__, '_metrics')
