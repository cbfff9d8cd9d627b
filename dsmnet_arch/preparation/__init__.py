"""Prepare the paper's deraining sets, as users download them, in BasicSR's paired layout.

BasicSR's stock ``PairedImageDataset`` wants ``input/`` and ``target/`` folders holding files of
the same name. None of the releases is arranged like that (``docs/datasets.md`` has the details),
so :func:`prepare_dataset` does, per split (``train``, ``test``):

1. discover the pairs in the release's native layout (:mod:`.layouts`, one entry per release,
   built from the pieces in :mod:`.discovery`);
2. check them before anything is written (:mod:`.inspection`): unreadable, empty or truncated
   files, pairs whose sizes differ, inputs without targets and targets without inputs, clashing
   output names; counts against the paper's are a warning only;
3. write ``<dst>/<split>/{input,target}/`` into a hidden temporary folder next to it, then rename
   it into place, so an interrupted run never leaves a half-written split behind
   (:mod:`.writing`). Files that are used unchanged are hard links to the downloaded ones (a
   copy where that fails); a clean image shared by several rainy ones (Rain1400) is stored once
   and linked under each name;
4. optionally build ``<dst>/<split>/{input,target}.lmdb`` with BasicSR's ``make_lmdb_from_imgs``
   and a map size computed from the images' sizes (:mod:`.writing`);
5. record the finished split in ``<dst>/<split>/prepared.json`` (:mod:`.prepare`). A split that
   has this file is never rewritten: a second run reports it as already prepared (and only adds
   the LMDBs when they are asked for and missing); a split folder without it is refused.

Problems found in step 2 are fatal by default: nothing is written, and the report
(:mod:`.report`) lists every one. With ``skip_bad=True`` the pairs they touch are left out
instead, and the report lists them.
"""
from dsmnet_arch.preparation.layouts import DATASETS, LAYOUTS, Layout, resolve_sources
from dsmnet_arch.preparation.prepare import prepare_dataset
from dsmnet_arch.preparation.report import PreparationError, PreparationReport

__all__ = [
    'DATASETS', 'LAYOUTS', 'Layout', 'PreparationError', 'PreparationReport', 'prepare_dataset', 'resolve_sources'
]
