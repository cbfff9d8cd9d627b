"""Small helpers shared by the package."""
import importlib
import pkgutil

#: File name endings of the images this package reads (all OpenCV decodes), lower case.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def import_modules(package_name, package_path, suffix):
    """Import every ``*<suffix>.py`` module of a subpackage.

    Importing runs the modules' BasicSR registry decorators, which is how BasicSR plugins
    (Real-ESRGAN, HAT) make ``type: X`` in an options file find their classes.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(package_path) if m.name.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    A process killed during the save leaves the previous file (or none), never a truncated one.
    """
    import os
    import tempfile

    import torch

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        with open(tmp_path, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
