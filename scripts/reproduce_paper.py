"""Reproduce the paper's Tables 2-5: prepare the downloads, train and test every experiment, compare.

    python scripts/reproduce_paper.py --data DOWNLOADS --out reproduce            # all four tables
    python scripts/reproduce_paper.py --data DOWNLOADS --out reproduce --dry-run  # the plan, at once
    python scripts/reproduce_paper.py ... --dry-run --time-estimate               # and a timed estimate

The program is :mod:`dsmnet_arch.reproduction.cli`; ``--help`` lists its options, docs/reproduce.md has the details.
"""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = ROOT


def import_without_the_networks(name):
    """Import ``dsmnet_arch.<name>`` without running dsmnet_arch/__init__.py, which imports PyTorch, BasicSR and
    the networks (seconds): --help and the plan print at once. What times or scores imports dsmnet_arch itself,
    in full, when it runs."""
    path = os.path.join(ROOT, 'dsmnet_arch', name)
    package = os.path.isdir(path)
    spec = importlib.util.spec_from_file_location(
        f'dsmnet_arch.{name}', os.path.join(path, '__init__.py') if package else f'{path}.py',
        submodule_search_locations=[path] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


if 'dsmnet_arch' not in sys.modules:
    import_without_the_networks('utils')  # the atomic writer of the options files and tables
    import_without_the_networks('reproduction')
from dsmnet_arch.reproduction.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
