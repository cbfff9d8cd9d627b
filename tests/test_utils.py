"""dsmnet_arch.utils.keep_freed_memory: large tensors come from the reusable heap, not fresh mmaps (utils.atomic_write,
through checkpoint.atomic_save: tests/test_checkpoint.py)."""
import platform
import sys

import pytest

from conftest import REPO, run_entry

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc',
                       reason='glibc malloc on Linux only'),
    pytest.mark.slow,  # each test allocates in fresh interpreters: 5 to 8 s
]

# Allocates 64 MiB twice and prints whether the second block lies in the brk heap ("[heap]" in
# /proc/self/maps) or in a mapping of its own, and what keep_freed_memory returned.
SCRIPT = '''
import sys
import torch
from dsmnet_arch.utils import keep_freed_memory
changed = keep_freed_memory() if sys.argv[1] == 'keep' else None
x = torch.ones(2**24)
del x
x = torch.ones(2**24)
start, end = next([int(v, 16) for v in line.split()[0].split('-')] for line in open('/proc/self/maps')
                  if line.rstrip().endswith('[heap]'))
print(changed, start <= x.data_ptr() < end)
'''


def run(tmp_path, mode, env=None):
    (tmp_path / 'alloc.py').write_text(SCRIPT)
    done = run_entry([str(tmp_path / 'alloc.py'), mode], cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_large_blocks_are_reused_from_the_heap(tmp_path):
    assert run(tmp_path, 'default') == ['None', 'False']  # glibc maps 64 MiB on its own
    assert run(tmp_path, 'keep') == ['True', 'True']


def test_user_malloc_tunables_win(tmp_path):
    assert run(tmp_path, 'keep', env={'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}) == ['False', 'False']
