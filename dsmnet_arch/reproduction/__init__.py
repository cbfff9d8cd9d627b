"""The paper's Tables 2-5 reproduced (scripts/reproduce_paper.py, docs/reproduce.md).

:mod:`.paper` the paper's figures as data; :mod:`.plan` the experiments and their options files; :mod:`.layout`
the files under ``--out`` and the state of each experiment; :mod:`.runner` the preparation, training and test
subprocesses; :mod:`.report` tables.md and tables.json; :mod:`.estimate` the dry run and its timed estimate;
:mod:`.cli` the command line. Importing them needs neither PyTorch nor BasicSR (the plan prints at once): the
functions that time or score import them when they run.
"""
