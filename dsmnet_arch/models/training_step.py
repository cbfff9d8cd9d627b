"""One training step of an image-to-image network: the step DerainModel trains with, usable without BasicSR.

:class:`TrainingStep` runs forward (under the autocast of a precision, :mod:`dsmnet_arch.precision`),
the loss on the fp32 output, backward (through a gradient scaler for fp16), the gradient norm with
optional clipping, and the optimizer step. ``DerainModel.optimize_parameters`` runs its phases one by
one, with its own decisions in between (the loss averaged over processes, the non-finite-loss policy,
the divergence guard, the EMA update after the step); a benchmark or a timed estimate calls the whole
step on a bare network, so that it times exactly what training runs::

    from dsmnet_arch.models.training_step import TrainingStep

    net = DSMNet().to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    step = TrainingStep(net, MSESSIMLoss().to(device), optimizer, device, precision='fp16')  # scaler made
    result = step(lq, gt)                    # one whole step; result.loss, result.grad_norm (floats)

``net`` may be ``torch.compile(net)`` (the optimizer then holds the network's own parameters, as in
DerainModel). A step holds no state of its own: network, optimizer and scaler keep it all, so a
step can be made afresh for every iteration or kept.
"""
import math
from collections import namedtuple

import torch

from dsmnet_arch.precision import autocast, grad_scaler

#: What a whole :class:`TrainingStep` returns: the network's output (in the autocast dtype), the loss
#: terms by name (fp32 tensors), their sum as a float, and the gradient norm before clipping (a float;
#: non-finite when a scaled fp16 gradient overflowed, the scaler then skipped the optimizer step).
StepResult = namedtuple('StepResult', 'output terms loss grad_norm')


class TrainingStep:
    """Forward, loss, backward and optimizer step of ``net``, as DerainModel trains it.

    Args:
        net (nn.Module): the network to run (possibly compiled or wrapped in DDP).
        loss (callable): ``loss(output, target)`` -> a loss tensor, or a mapping of named loss terms whose
            sum is minimised (DerainModel's ``l_pix``, ``l_percep``, ...). ``output`` is the network's
            output cast to fp32.
        optimizer (torch.optim.Optimizer): the optimizer of ``net``'s parameters.
        device (torch.device | str): where ``net`` runs (the autocast's device type).
        precision (str | None): ``'fp32'`` (or ``None``), ``'bf16'`` or ``'fp16'``
            (:mod:`dsmnet_arch.precision`; whether the device supports it is the caller's to check).
        scaler (torch.amp.GradScaler | None | str): the gradient scaler; ``'auto'`` (default): a new one
            for fp16 (:func:`dsmnet_arch.precision.grad_scaler`), none otherwise. ``None`` with fp16 is
            refused: fp16 gradients underflow without loss scaling. A scaler may also run with fp32.
        grad_clip_norm (float | None): clip the gradients to this total norm before the optimizer step;
            ``None``: no clipping (the norm is still measured, as DerainModel logs it).
    """

    def __init__(self, net, loss, optimizer, device, precision=None, scaler='auto', grad_clip_norm=None):
        self.net, self.loss, self.optimizer = net, loss, optimizer
        self.device = torch.device(device)
        self.precision = precision
        if scaler == 'auto':
            scaler = grad_scaler(self.device, precision)
        elif scaler is None and precision == 'fp16':
            raise ValueError('TrainingStep: fp16 needs a gradient scaler (scaler=None given); leave scaler="auto"')
        self.scaler = scaler
        self.grad_clip_norm = grad_clip_norm

    def __call__(self, lq, gt):
        """One whole step on the batch ``lq`` -> ``gt``; returns a :data:`StepResult`. A non-finite loss
        raises ``FloatingPointError`` before backward (nothing updated): DerainModel's default
        (``train:nonfinite_loss: stop``)."""
        output, terms, total = self.forward(lq, gt)
        loss = total.item()
        if not math.isfinite(loss):
            raise FloatingPointError(f'Non-finite loss: {", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())}')
        grad_norm = self.backward(total)
        self.step()
        return StepResult(output, terms, loss, grad_norm)

    def forward(self, lq, gt):
        """Zero the gradients, run the network on ``lq`` under the precision's autocast and the loss of its
        fp32 output against ``gt``. Returns ``(output, terms, total)``: the output as the network gave it,
        the loss terms by name (a bare loss tensor is named ``loss``) and their sum (a tensor)."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            output = self.net(lq)
        terms = self.loss(output.float(), gt)
        if torch.is_tensor(terms):
            terms = {'loss': terms}
        return output, terms, sum(terms.values())

    def backward(self, total):
        """Gradients of the loss ``total`` (unscaled again when a gradient scaler runs), clipped to
        ``grad_clip_norm`` when set; returns their total norm before clipping as a float (non-finite when a
        scaled fp16 gradient overflowed)."""
        if self.scaler is None:
            total.backward()
        else:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip_norm or float('inf')
        return torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm).item()

    def step(self):
        """The optimizer step; through the gradient scaler, which skips it when the gradients overflowed
        and updates its scale."""
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
