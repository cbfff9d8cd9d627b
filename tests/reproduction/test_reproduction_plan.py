"""dsmnet_arch.reproduction.plan: the experiments and their options files, here the network-level reading of
Table 5 (--table5-network-level)."""
import yaml

from dsmnet_arch.archs.dsmnet_arch import MAB_VARIANTS
from dsmnet_arch.reproduction.cli import main
from dsmnet_arch.reproduction.paper import ALL_TABLES, TABLES

from test_reproduction_cli import dry_run_argv, listed_experiments


def test_table5_network_level_is_an_extra_table_of_four_more_runs(tmp_path, capsys):
    """--table5-network-level: Table 5's five rows read as the links between the MABs; M5 (all links, the full
    MAB) is the paper's model that the other tables share, the other four are runs of their own that differ
    from it in the level switches alone."""
    out = tmp_path / 'out'
    assert main(dry_run_argv(tmp_path, '--tables', '5')) == 0
    default = listed_experiments(capsys.readouterr().out)
    assert main(dry_run_argv(tmp_path, '--tables', '5', '--table5-network-level')) == 0
    text = capsys.readouterr().out
    listed = listed_experiments(text)
    more = [entry for entry in listed if entry[0] not in {name for name, *_ in default}]
    assert len(default) == 5 and len(listed) == 9 and [name for name, *_ in more] == [
        f'DSMNet_Rain100L_netM{i}' for i in (1, 2, 3, 4)]
    assert all(tables == '5n' and dataset == 'Rain100L' and iters == '250' for _, tables, dataset, iters in more)
    assert ('DSMNet_Rain100L', '5, 5n', 'Rain100L', '250') in listed  # M5 of both readings: the paper's model

    def options(name):
        return yaml.safe_load((out / 'options' / f'train_{name}.yml').read_text())

    paper = options('DSMNet_Rain100L')
    links = {'M1': (False, False, False), 'M2': (True, True, False), 'M3': (True, False, True),
             'M4': (False, True, True), 'M5': (True, True, True)}  # Across-Down, Across-Up, Dense-Fusion: Table 5
    assert tuple(paper['network_g'][k] for k in ('level_down', 'level_up', 'level_dense')) == links['M5']
    for m in ('M1', 'M2', 'M3', 'M4'):
        opt = options(f'DSMNet_Rain100L_net{m}')
        assert tuple(opt['network_g'][k] for k in ('level_down', 'level_up', 'level_dense')) == links[m]
        assert opt['network_g']['mab_variant'] == 'M5'
        differ = {k for k in paper['network_g'] if opt['network_g'][k] != paper['network_g'][k]}
        assert differ == {k for k, on in zip(('level_down', 'level_up', 'level_dense'), links[m]) if not on}
        assert opt['train'] == paper['train'] and opt['datasets']['train'] == paper['datasets']['train']
        assert {k: v for k, v in opt.items() if k not in ('name', 'network_g')} == {
            k: v for k, v in paper.items() if k not in ('name', 'network_g')}
    assert {m: tuple(v.values()) for m, v in MAB_VARIANTS.items()} == links  # the same pattern inside the MAB
    # the same figures as the paper's Table 5 under either reading
    assert [r.paper for r in ALL_TABLES['5n'][1]] == [r.paper for r in TABLES[5][1]]
    header = (out / 'options' / 'train_DSMNet_Rain100L_netM3.yml').read_text().splitlines()[0]
    assert header.endswith('for our network-level reading of table 5 row M3.')
