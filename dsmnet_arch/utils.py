"""Small helpers shared by the package."""
import importlib
import pkgutil


def import_modules(package_name, package_path, suffix):
    """Import every ``*<suffix>.py`` module of a subpackage.

    Importing runs the modules' BasicSR registry decorators, which is how BasicSR plugins
    (Real-ESRGAN, HAT) make ``type: X`` in an options file find their classes.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(package_path) if m.name.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]
