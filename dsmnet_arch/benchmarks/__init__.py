"""Benchmarks that measure the package: programs, run from scripts/ or with ``python -m``.

``benchmark`` (scripts/benchmark.py): :mod:`.cli`, with :mod:`.reference`, :mod:`.training`, :mod:`.inference`,
:mod:`.profile`, :mod:`.data` and :mod:`.report`; ``benchmark_infer`` (scripts/benchmark_infer.py):
:mod:`.inference_command`; ``benchmark_compare`` (scripts/benchmark_compare.py): :mod:`.compare`, another version of
the architecture against this one; the training stability benchmark: :mod:`.stability`. :mod:`.timing` holds the
timing helpers they share with the reproduction's estimate (:mod:`dsmnet_arch.reproduction.estimate`).
"""
import os

#: the checkout above the package: the benchmarks read its options/ files
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
