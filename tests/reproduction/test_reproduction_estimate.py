"""dsmnet_arch.reproduction.estimate: --dry-run --time-estimate times each network once, on a small image."""
import re

import pytest

from dsmnet_arch.reproduction import estimate
from dsmnet_arch.reproduction.cli import main

from conftest import DOWNLOAD_H, DOWNLOAD_W, REPRODUCE_EXPERIMENTS
from test_reproduction_cli import dry_run_argv


@pytest.mark.slow  # times 12 networks: 4 s
def test_time_estimate_times_each_network_once(tmp_path, capsys, monkeypatch):
    # time a small test image: seconds, not minutes
    monkeypatch.setattr(estimate, 'ESTIMATE_IMAGE', (DOWNLOAD_H, DOWNLOAD_W))
    timed, time_network = [], estimate.time_network

    def counted(train_opt, iters, device):
        timed.append((train_opt['network_g'], iters, train_opt['datasets']['train']['batch_size_per_gpu']))
        return time_network(train_opt, iters, device)

    monkeypatch.setattr(estimate, 'time_network', counted)
    assert main(dry_run_argv(tmp_path, '--gpus', '2', '--jobs', '2', '--time-estimate')) == 0
    text = capsys.readouterr().out
    assert len(re.findall(r'estimate: [\d.]+ s/iteration -> training .+, validation and test', text)) == (
        REPRODUCE_EXPERIMENTS)
    assert re.search(r'Total: [\d,]+ iterations; estimated .+ of work left, .+ with 2 at a time on the CPU', text)
    # the paper's network (once for all four data sets), 5 attention variants, 2 subspace counts, M1-M4
    assert len(timed) == 12 and all(iters == 1 and batch == 16 for _, iters, batch in timed)
    assert sorted((n['attention'], n['num_subspaces'], n['mab_variant']) for n, *_ in timed) == sorted(
        [('ca+sa', 8, 'M5'), ('ca', 8, 'M5'), ('sp', 8, 'M5'), ('sa', 8, 'M5'), ('ca+sp', 8, 'M5'),
         ('sp+sa', 8, 'M5'), ('ca+sa', 4, 'M5'), ('ca+sa', 16, 'M5')] + [('ca+sa', 8, f'M{i}') for i in range(1, 5)])
