"""dsmnet_arch.reproduction.layout: the settings recorded under --out; other settings are refused, not mixed, and
more GPUs resume an experiment when BatchNorm sees the same batch."""
from dsmnet_arch.reproduction import layout, plan
from dsmnet_arch.reproduction.cli import parse_args


def test_other_settings_in_the_same_out_are_refused_not_mixed(tmp_path, capsys):
    exp = plan.build_experiments([5])[1]
    out = tmp_path / 'out'
    args = parse_args(['--data', str(tmp_path), '--scale', '0.5'])
    exp.train_opt, _ = plan.make_options(exp, out, args, cuda=False)
    layout.write_json(out / 'runs' / exp.name / 'settings.json', layout.fingerprint(exp.train_opt, 1))
    assert layout.status(exp, out, 1) == ('new', '')
    exp.train_opt, _ = plan.make_options(exp, out, parse_args(['--data', str(tmp_path)]), cuda=False)
    state, detail = layout.status(exp, out, 1)
    assert state == 'changed' and 'train:total_iter 62500 -> 125000' in detail


def test_more_gpus_resume_the_same_experiment_when_batchnorm_sees_the_same_batch(tmp_path):
    """--gpus 2 on GPUs synchronises BatchNorm, so a run started on one GPU may go on on two; turning sync_bn off
    there changes what BatchNorm sees (16 images) and is refused."""
    exp = plan.build_experiments([5])[0]
    out = tmp_path / 'out'

    def fingerprint(*argv):
        args = parse_args(['--data', str(tmp_path), *argv])
        exp.train_opt, _ = plan.make_options(exp, out, args, cuda=True)
        return layout.fingerprint(exp.train_opt, args.gpus)

    layout.write_json(out / 'runs' / exp.name / 'settings.json', fingerprint())
    assert exp.train_opt['train'].get('sync_bn') is None
    fingerprint('--gpus', '2')
    assert exp.train_opt['train']['sync_bn'] is True and layout.status(exp, out, 2) == ('new', '')
    fingerprint('--gpus', '2', '--override', 'train:sync_bn=false')
    state, detail = layout.status(exp, out, 2)
    assert state == 'changed' and detail == 'batchnorm_batch unset -> 16'
