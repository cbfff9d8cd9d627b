"""dsmnet_arch.loading: a trained network from weights, a checkpoint's record or an options file (build_model), the
wrong files refused by name, and the weights of version 0.1 (tests/fixtures/)."""
import inspect
import os

import numpy as np
import pytest
import torch
import yaml

import dsmnet_arch.loading as loading
from dsmnet_arch.archs.dsmnet_arch import DSMNet, args_from_state_dict

from conftest import REPO, TINY, small_dsmnet, smooth_image, to_tensor


def test_files_that_are_not_dsmnet_weights_are_refused(tmp_path):
    text = tmp_path / 'notes.pth'
    text.write_text('hello')
    with pytest.raises(ValueError, match=f'Cannot load checkpoint {text}'):
        loading.build_model(str(text))
    optimizer_state = tmp_path / 'state.pth'
    torch.save({'iter': 3, 'optimizers': [{'lr': 0.1}]}, optimizer_state)
    with pytest.raises(ValueError, match=f'Cannot use {optimizer_state}: expected a state dict of tensors'):
        loading.build_model(str(optimizer_state))
    other = tmp_path / 'other.pth'
    torch.save(torch.nn.Conv2d(3, 3, 3).state_dict(), other)
    with pytest.raises(ValueError, match=f'Weights in {other} are not DSMNet weights'):
        loading.build_model(str(other))


def test_params_ema_is_preferred_and_bare_state_dicts_load(tmp_path):
    ema, plain = small_dsmnet(seed=1).state_dict(), small_dsmnet(seed=2).state_dict()
    cases = {'both.pth': {'params': plain, 'params_ema': ema}, 'params.pth': {'params': plain},
             'bare.pth': ema, 'ddp.pth': {'params': {f'module.{k}': v for k, v in plain.items()}}}
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
    expected = {'both.pth': ema, 'params.pth': plain, 'bare.pth': ema, 'ddp.pth': plain}
    for name, state in expected.items():
        loaded = loading.build_model(str(tmp_path / name)).state_dict()
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state), name


VARIANTS = [
    dict(),
    dict(num_feat=12, num_levels=3, num_subspaces=4, reduction=3),
    dict(num_levels=4, kernel_sizes=(5, 1, 3), dilated=True, attention='ca+sp', level_dense=False),
    dict(num_levels=3, kernel_sizes=(3, 7), attention='sa', level_down=False),
    dict(num_levels=3, attention='sp', level_up=False, level_down=False, level_dense=False),
    dict(num_levels=1, attention='sp+sa', num_subspaces=8),
]


@pytest.mark.parametrize('variant', VARIANTS, ids=[str(i) for i in range(len(VARIANTS))])
def test_arguments_inferred_from_the_weights_match_the_options_file(tmp_path, variant):
    args = {**TINY, **variant}
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    model = small_dsmnet(**variant)
    torch.save({'params': model.state_dict()}, tmp_path / 'w.pth')
    opt = tmp_path / 'train.yml'
    opt.write_text(yaml.safe_dump({'name': 'x', 'network_g': {'type': 'DSMNet', **args}}))
    x = to_tensor(smooth_image(24, 20))
    with torch.no_grad():
        expected = model(x)
        for built in (loading.build_model(str(tmp_path / 'w.pth')), loading.build_model(str(tmp_path / 'w.pth'), opt)):
            torch.testing.assert_close(built(x), expected)
    inferred = args_from_state_dict(model.state_dict())
    defaults = {k: p.default for k, p in inspect.signature(DSMNet).parameters.items()}
    for key, value in inferred.items():  # whatever the keys tell is right
        assert np.array_equal(np.atleast_1d(value), np.atleast_1d(args.get(key, defaults[key]))), key


def test_the_checkpoints_record_of_the_arguments_builds_the_variant(tmp_path):
    """Table 5's variants have the same weights: the recorded arguments (or --opt) tell them apart."""
    model = small_dsmnet(mab_variant='M3', level_dense=False)
    record = {'type': 'DSMNet', **TINY, 'mab_variant': 'M3', 'level_dense': False}
    torch.save({'params': model.state_dict(), 'arch': record}, tmp_path / 'w.pth')
    torch.save({'params': model.state_dict()}, tmp_path / 'bare.pth')
    opt = tmp_path / 'train.yml'
    opt.write_text(yaml.safe_dump({'network_g': record}))
    x = to_tensor(smooth_image(20, 20))
    with torch.no_grad():
        expected = model(x)
        for built in (loading.build_model(str(tmp_path / 'w.pth')),
                      loading.build_model(str(tmp_path / 'bare.pth'), opt)):
            assert [m.across_up for m in built.mab.values()] == [False] * len(built.mab)
            torch.testing.assert_close(built(x), expected)
        read_off = loading.build_model(str(tmp_path / 'bare.pth'))  # no record: the weights' reading, M5
        assert all(m.across_up for m in read_off.mab.values())
        assert (read_off(x) - expected).abs().max() > 1e-4
    torch.save({'params': model.state_dict(), 'arch': {'type': 'MSRResNet', 'num_feat': 8}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='other.pth holds the weights of a MSRResNet, not of a DSMNet'):
        loading.build_model(str(tmp_path / 'other.pth'))
    torch.save({'params': model.state_dict(), 'arch': ['DSMNet']}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='bad.pth: its "arch" entry is not a network type with arguments'):
        loading.build_model(str(tmp_path / 'bad.pth'))
    torch.save({'params': model.state_dict(), 'arch': {**record, 'num_feats': 8}}, tmp_path / 'unknown.pth')
    with pytest.raises(ValueError, match='Unknown DSMNet arguments in the arguments saved in .*unknown.pth: num_feats'):
        loading.build_model(str(tmp_path / 'unknown.pth'))


@pytest.mark.parametrize('name', ['default', 'no_links'])
def test_weights_saved_by_version_0_1_load_and_give_the_same_output(name):
    """Files written by dsmnet_arch 0.1.0, before Table 5 moved into the MAB (tests/fixtures/README.md)."""
    data = os.path.join(REPO, 'tests', 'fixtures')
    reference = torch.load(os.path.join(data, 'dsmnet_v0.1_outputs.pt'), weights_only=True)
    model = loading.build_model(os.path.join(data, f'dsmnet_v0.1_{name}.pth'))
    assert model.level_up == (name == 'default') and all(m.dense_fusion for m in model.mab.values())
    with torch.no_grad():
        torch.testing.assert_close(model(reference['input']), reference[name], rtol=1e-5, atol=1e-6)


def test_options_that_do_not_fit_the_weights_are_named(tmp_path):
    torch.save({'params': small_dsmnet().state_dict()}, tmp_path / 'w.pth')
    opt = tmp_path / 'train.yml'
    opt.write_text(yaml.safe_dump({'network_g': {'type': 'DSMNet', **TINY, 'num_feat': 16, 'reduction': 2}}))
    with pytest.raises(ValueError) as err:
        loading.build_model(str(tmp_path / 'w.pth'), str(opt))
    assert str(err.value) == (f'Weights in {tmp_path / "w.pth"} do not fit DSMNet(network_g of {opt}): '
                              'num_feat=16 vs 8 in the weights; reduction=2 vs 4 in the weights')
    opt.write_text(yaml.safe_dump({'network_g': {'type': 'MSRResNet', 'num_feat': 8}}))
    with pytest.raises(ValueError, match='network_g must be a section with "type: DSMNet", got type .MSRResNet.'):
        loading.build_model(str(tmp_path / 'w.pth'), str(opt))
    opt.write_text(yaml.safe_dump({'network_g': {'type': 'DSMNet', 'num_feats': 8}}))
    with pytest.raises(ValueError, match='Unknown DSMNet arguments in network_g of .*: num_feats'):
        loading.build_model(str(tmp_path / 'w.pth'), str(opt))


def test_the_bundled_weights_load_run_and_lower_the_error_on_a_rainy_photograph():
    """The weights the package ships (dsmnet_arch/weights/): a DSMNet at the width its record says, which removes
    much of the package's synthetic rain from a held-out photograph crop."""
    import skimage.data

    from dsmnet_arch.checkpoint import load_checkpoint
    from dsmnet_arch.data.rain_synthesis import synthesize_rain

    path = loading.default_weights()
    assert path == loading.BUNDLED_WEIGHTS and os.path.isfile(path)
    assert os.path.getsize(path) < 10e6
    checkpoint = load_checkpoint(path)
    assert set(checkpoint) == {'params', 'arch', 'options'} and 'bundled_data' in checkpoint['options']
    model = loading.build_model(path)
    assert model.mab['0_0'].res_scale == checkpoint['arch']['res_scale'] == 0.1
    clean = skimage.data.chelsea()[100:196, 150:246]  # a held-out photograph, never trained on
    rainy, _ = synthesize_rain(clean, 'heavy', seed=[123, 4])
    with torch.no_grad():
        out = model(torch.from_numpy(rainy).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    before = np.abs(rainy / 255 - clean / 255).mean()
    after = np.abs(out.clip(0, 1) - clean / 255).mean()
    assert after < 0.6 * before, (before, after)
