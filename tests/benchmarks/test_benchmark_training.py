"""dsmnet_arch.benchmarks.training: the timed training step is DerainModel's, fp16 through a gradient scaler."""
import pytest
import torch

from dsmnet_arch.benchmarks.training import make_training_step


@pytest.mark.parametrize('precision, scaled', [('fp16', True), ('bf16', False), ('fp32', False), (None, False)])
def test_the_timed_training_step_scales_fp16_losses_as_training_does(monkeypatch, precision, scaled):
    """The step benchmark.py and the reproduction's estimate time runs fp16 through a gradient scaler, as
    DerainModel's training does (scale, backward, scaler step, update), and the others without one."""
    calls = []

    class Scaler(torch.amp.GradScaler):
        def scale(self, outputs):
            calls.append('scale')
            return super().scale(outputs)

        def step(self, optimizer, *args, **kwargs):
            calls.append('step')
            return super().step(optimizer, *args, **kwargs)

        def update(self, new_scale=None):
            calls.append('update')
            return super().update(new_scale)

    monkeypatch.setattr(torch.amp, 'GradScaler', Scaler)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    before = [p.detach().clone() for p in net.parameters()]
    lq = torch.rand(2, 3, 8, 8)
    step = make_training_step(net, torch.nn.MSELoss(), torch.optim.Adam(net.parameters(), lr=1e-3), lq, lq * 0.5,
                              precision)
    step()
    step()
    assert calls == (['scale', 'step', 'update'] * 2 if scaled else [])
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the optimizer stepped
