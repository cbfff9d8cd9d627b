"""Small helpers shared by the package."""
import ctypes
import importlib
import os
import pkgutil
import tempfile

#: File name endings of the images this package reads (all OpenCV decodes), lower case.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def import_modules(package_name, package_path, suffix):
    """Import every ``*<suffix>.py`` module of a subpackage.

    Importing runs the modules' BasicSR registry decorators, which is how BasicSR plugins
    (Real-ESRGAN, HAT) make ``type: X`` in an options file find their classes.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(package_path) if m.name.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]


def atomic_write(path, write):
    """Create or replace the file ``path`` with what ``write(f)`` writes to a binary file object ``f``.

    It writes a temporary file beside ``path``, syncs it and renames it over ``path``: a process killed
    on the way leaves the previous file (or none), never a truncated one. The file gets the
    permissions of a plainly created one (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory():
    """Make glibc's malloc keep freed memory in the process for reuse; returns whether it did.

    By default glibc maps each allocation of 32 MiB or more (one 32-channel activation at
    512 x 512) on its own and unmaps it when it is freed, so every new activation of that size
    costs the kernel a page fault and a zeroed page per 4 KiB: on a CPU, over a third of DSM-Net's
    inference CPU time went to the kernel (docs/benchmarks.md). With mmap off and no trimming, the
    heap grows once to the peak and is reused. Called by the programs of this package (train,
    test, inference, benchmark), not on import. Nothing is changed when ``GLIBC_TUNABLES`` sets
    any ``glibc.malloc`` tunable (the user's choice), nor where the C library is not glibc.
    """
    if 'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    # both calls return 1 on success; the trim threshold is an int: 2 GiB - 1 is its largest value
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
