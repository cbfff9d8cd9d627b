"""Data utilities, as BasicSR's ``basicsr/data`` holds them: the seeded rain synthesizer (``rain_synthesis``).

No dataset class is needed: BasicSR's own ``PairedImageDataset`` reads the pairs that
:mod:`dsmnet_arch.preparation` writes, so nothing here registers with BasicSR.
"""
