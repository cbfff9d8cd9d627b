"""Link DSM-Net into a BasicSR git clone: ``python -m dsmnet_arch.link_basicsr PATH/TO/BasicSR``.

Afterwards the clone's own ``basicsr/train.py`` and ``basicsr/test.py`` find ``DSMNet``,
``MSESSIMLoss`` and ``DerainModel``, with this package's BasicSR fixes (``dsmnet_arch.compat``)::

    cd PATH/TO/BasicSR
    PYTHONPATH="./:${PYTHONPATH}" python basicsr/train.py -opt options/train_DSMNet_Rain100H.yml

``--undo`` removes exactly what the link added. The link copies none of the package's code into
the clone, it adds:

- ``basicsr/archs/dsmnet_link_arch.py``: a stub that loads this file from the installed package
  and calls :func:`install`. BasicSR imports every ``basicsr/archs/*_arch.py`` while ``import
  basicsr`` runs, before ``basicsr.data``. ``import dsmnet_arch`` cannot run there (it needs the
  whole of ``basicsr``, whose ``basicsr.archs`` is half-imported at that moment), so
  :func:`install` makes Python import ``dsmnet_arch`` in place of BasicSR's next import,
  ``basicsr.data``: the fixes are applied before ``basicsr.data`` imports the torchvision module
  that torchvision 0.17 removed, then DSM-Net's types register in the clone's registries.
- ``options/*DSMNet*.yml``: symbolic links to this checkout's options files, when the package runs
  from a checkout that has them (so ``-opt options/train_DSMNet_Rain100H.yml`` works in the clone).

Because the clone's stub imports this file on its own, outside the package, this module imports
only the standard library at import time (the command itself runs inside the package).
"""
import argparse
import importlib
import importlib.abc
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

#: The stub's file name in the clone's ``basicsr/archs/`` (BasicSR imports files ending in ``_arch.py``).
STUB_NAME = 'dsmnet_link_arch.py'
#: First line of every stub: how ``--undo`` tells the stub from a file it did not write.
MARKER = '# Written by `python -m dsmnet_arch.link_basicsr`; `python -m dsmnet_arch.link_basicsr --undo` removes it.'
STUB = MARKER + '''
"""DSM-Net for this BasicSR clone: DSMNet, MSESSIMLoss and DerainModel, and dsmnet_arch's BasicSR fixes.

No DSM-Net code here: this runs dsmnet_arch/link_basicsr.py of the installed package (its docstring
says how), which imports the package dsmnet_arch while BasicSR imports basicsr.
"""
import importlib.util
import os

_package = importlib.util.find_spec('dsmnet_arch')
if _package is None:
    raise ImportError(f'{__file__} links DSM-Net into this BasicSR clone, but this Python has no package '
                      'dsmnet_arch: install it, or unlink the clone with python -m dsmnet_arch.link_basicsr --undo')
_spec = importlib.util.spec_from_file_location(
    'dsmnet_arch_link_basicsr', os.path.join(_package.submodule_search_locations[0], 'link_basicsr.py'))
_link = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_link)
_link.install()
'''
#: Files a clone must have to be laid out like BasicSR's repository.
CLONE_FILES = ('basicsr/__init__.py', 'basicsr/archs/__init__.py', 'basicsr/train.py', 'basicsr/test.py')


# ----------------------------------------------------------------------------- in the clone's process

class _ImportPackageFirst(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``dsmnet_arch`` in place of the first import of ``basicsr.data``.

    ``import dsmnet_arch`` applies the fixes, then imports ``basicsr.data`` (and the rest of
    ``basicsr``) itself; the import that was asked for gets that module.
    """

    def find_spec(self, name, path, target=None):
        if name != 'basicsr.data':
            return None
        sys.meta_path.remove(self)  # once: imports inside dsmnet_arch's import take the usual way
        return importlib.util.spec_from_loader(name, self, is_package=True)

    def create_module(self, spec):
        import dsmnet_arch  # noqa: F401  (BasicSR fixes, then registers DSMNet, MSESSIMLoss, DerainModel)
        _fix_train_script_resume()
        module = importlib.import_module(spec.name)  # loaded by the line above
        self._spec = module.__spec__  # the import system sets module.__spec__ to ours next: restored below
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the module ran when dsmnet_arch imported it: nothing left to run


def _fix_train_script_resume():
    """Give the clone's ``basicsr/train.py``, run as a script, the fixed ``load_resume_state``.

    Prevents: ``python basicsr/train.py --auto_resume`` in a linked clone fails without a GPU.
    ``python basicsr/train.py`` runs that file as ``__main__``, a second copy of ``basicsr.train``
    whose ``train_pipeline`` calls its own ``load_resume_state``, which ``dsmnet_arch.compat``
    replaced in ``basicsr.train`` only (BasicSR's loads the state onto CUDA: no resume on a CPU).
    The script defines that function after its imports, so it is replaced when the script's
    ``train_pipeline`` calls ``parse_options``, its first step. Global (``basicsr.utils.options``),
    and only in that script's process: the script binds ``parse_options`` by name at its import,
    and nothing else of ours runs between its imports and its resume.
    """
    main = sys.modules.get('__main__')
    basicsr = sys.modules['basicsr']
    script = os.path.join(os.path.dirname(basicsr.__file__), 'train.py')
    if not getattr(main, '__file__', None) or os.path.realpath(main.__file__) != os.path.realpath(script):
        return
    options, train = importlib.import_module('basicsr.utils.options'), importlib.import_module('basicsr.train')
    parse_options = options.parse_options

    def parse_options_with_fixed_resume(root_path, is_train=True):
        main.load_resume_state = train.load_resume_state
        return parse_options(root_path, is_train=is_train)

    options.parse_options = parse_options_with_fixed_resume


def install():
    """Called by the clone's stub during ``import basicsr``: import ``dsmnet_arch`` before ``basicsr.data``.

    Nothing to do when ``dsmnet_arch`` is already imported or being imported (a script that imports
    it first, as ``dsmnet_arch/train.py`` does): that import applies the fixes and registers.
    """
    if 'dsmnet_arch' not in sys.modules:
        sys.meta_path.insert(0, _ImportPackageFirst())


# ----------------------------------------------------------------------------- the command

class LinkError(Exception):
    """A clone that cannot be linked or unlinked as asked; the message names the file."""


def check_clone(clone):
    """``clone`` as an absolute ``Path`` if it is laid out like BasicSR's repository, else ``LinkError``."""
    clone = Path(clone).resolve()
    if not clone.is_dir():
        raise LinkError(f'{clone} is not a folder')
    package = clone / 'basicsr'
    if (package / 'models' / 'archs' / '__init__.py').is_file() and not (package / 'archs').is_dir():
        raise LinkError(f'{clone} is a BasicSR fork with basicsr/models/archs/ (Restormer, DRSformer, NAFNet): '
                        'it finds type: by class name, link the architecture file instead (docs/forks.md)')
    if (clone / 'archs' / '__init__.py').is_file() and (clone / 'train.py').is_file():
        raise LinkError(f'{clone} is the basicsr package folder; give the clone, its parent: {clone.parent}')
    missing = [name for name in CLONE_FILES if not (clone / name).is_file()]
    if missing:
        raise LinkError(f'{clone} is not laid out like a BasicSR clone: no {", ".join(missing)}')
    if '_arch.py' not in (clone / 'basicsr' / 'archs' / '__init__.py').read_text(encoding='utf-8'):
        raise LinkError(f'{clone / "basicsr/archs/__init__.py"} does not import the *_arch.py files of its folder '
                        'as BasicSR does, so it would not import the link')
    return clone


def our_options():
    """The ``*DSMNet*.yml`` options files of the checkout this package runs from (none when installed)."""
    folder = Path(__file__).resolve().parent.parent / 'options'
    return sorted(folder.glob('*DSMNet*.yml'))


def _is_our_link(path, target):
    return path.is_symlink() and os.readlink(path) == str(target)


def _is_our_stub(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.readline().rstrip('\n') == MARKER


def link(clone):
    """Add the stub and the options links to ``clone``; returns the lines to report. Idempotent."""
    from dsmnet_arch.utils import atomic_write

    clone = check_clone(clone)
    stub = clone / 'basicsr' / 'archs' / STUB_NAME
    report = []
    if stub.is_symlink() or (stub.exists() and not _is_our_stub(stub)):
        raise LinkError(f'{stub} exists and was not written by this command: not touching it')
    if stub.exists() and stub.read_text(encoding='utf-8') == STUB:
        report.append(f'kept    {stub} (already linked)')
    else:
        report.append(f'{"updated" if stub.exists() else "wrote  "} {stub}')
        atomic_write(stub, lambda f: f.write(STUB.encode('utf-8')))
    options, sources = clone / 'options', our_options()
    if not sources:
        report.append('note: no options files linked: this package is installed without its checkout\'s options/')
    elif not options.is_dir():
        report.append(f'note: no options files linked: {clone} has no options/ folder')
        sources = []
    linked = []
    for source in sources:
        target = options / source.name
        if _is_our_link(target, source):
            continue
        if target.exists() or target.is_symlink():
            report.append(f'note: left {target} alone (not a link to {source})')
            continue
        target.symlink_to(source)
        linked.append(source.name)
    if linked:
        report.append(f'linked  {len(linked)} options files in {options} to {sources[0].parent}: {", ".join(linked)}')
    return report


def unlink(clone):
    """Remove what :func:`link` added to ``clone`` (the stub, its bytecode, the options links);
    refuses, touching nothing, when the stub is a file this command did not write."""
    clone = check_clone(clone)
    stub = clone / 'basicsr' / 'archs' / STUB_NAME
    if stub.is_symlink() or (stub.exists() and not _is_our_stub(stub)):
        raise LinkError(f'{stub} was not written by this command: not removing it')
    removed = [stub] if stub.exists() else []
    removed += sorted((stub.parent / '__pycache__').glob(f'{stub.stem}.*.pyc'))
    removed += [clone / 'options' / s.name for s in our_options() if _is_our_link(clone / 'options' / s.name, s)]
    for path in removed:
        path.unlink()
    return [f'removed {path}' for path in removed] or [f'nothing to undo: {clone} is not linked']


def basicsr_seen_by_scripts(clone):
    """Where ``import basicsr`` leads in ``python basicsr/train.py`` run from ``clone`` in this
    environment (its ``PYTHONPATH`` included): the ``__init__.py`` found, or ``None``."""
    probe = 'import importlib.util, sys; sys.path[0] = sys.argv[1]; s = importlib.util.find_spec("basicsr"); ' \
            'print(s.origin if s else "")'
    proc = subprocess.run([sys.executable, '-c', probe, str(clone / 'basicsr')], cwd=clone, capture_output=True,
                          text=True)
    return proc.stdout.strip() or None


def main(argv=None):
    """Command line entry point; returns the exit status (0 done, 1 refused or not a BasicSR clone)."""
    parser = argparse.ArgumentParser(
        prog='python -m dsmnet_arch.link_basicsr',
        description="Make a BasicSR git clone's basicsr/train.py and basicsr/test.py find DSMNet, MSESSIMLoss and "
        'DerainModel (with dsmnet_arch\'s BasicSR fixes), without copying code into it; --undo reverts.')
    parser.add_argument('clone', help='the BasicSR clone: the folder that holds basicsr/ and options/')
    parser.add_argument('--undo', action='store_true', help='remove what the link added, and nothing else')
    args = parser.parse_args(argv)
    try:
        report = unlink(args.clone) if args.undo else link(args.clone)
    except (LinkError, OSError) as err:
        print(f'link_basicsr: error: {err}', file=sys.stderr)
        return 1
    print('\n'.join(report))
    if args.undo:
        return 0
    clone = Path(args.clone).resolve()
    seen = basicsr_seen_by_scripts(clone)
    if seen is None or Path(seen).resolve() != clone / 'basicsr' / '__init__.py':
        print(f'note: here `python basicsr/train.py` imports basicsr from {seen}, not from the clone: run the '
              'scripts as BasicSR\'s docs/TrainTest.md does, with PYTHONPATH="./:${PYTHONPATH}" (or install the '
              'clone in development mode)')
    print(f'Train and test from {clone}:\n'
          '  PYTHONPATH="./:${PYTHONPATH}" python basicsr/train.py -opt options/train_DSMNet_Rain100H.yml\n'
          '  PYTHONPATH="./:${PYTHONPATH}" python basicsr/test.py -opt options/test_DSMNet_Rain100H.yml\n'
          f'Undo: python -m dsmnet_arch.link_basicsr --undo {clone}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
