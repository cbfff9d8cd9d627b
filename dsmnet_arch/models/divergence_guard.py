"""DerainModel's divergence guard (``train: guard``, our design; the paper trains without one).

A run that blows up does so in a few iterations: the network's activations grow, the loss
climbs from about 0.05 to 1e3 and beyond while still finite, and only dozens of iterations
later turns NaN (docs/architecture.md, "Training stability"). The guard watches every
iteration for

- a non-finite loss or gradient norm,
- a loss above ``loss_ratio`` times the median of the last ``window`` good losses,
- a gradient norm above ``grad_ratio`` times the median of the last ``window`` good ones (off
  unless set),

and answers such an iteration, before its optimizer step, by restoring the whole training state
(network, EMA network, optimizers, schedulers, gradient scaler) of a snapshot kept in memory, on
the CPU. Snapshots are taken every ``snapshot_every`` iterations; the guard keeps the two newest
and restores the older one, so the state it goes back to is at least ``snapshot_every``
iterations older than the trip, taken before the weights started to run away. The learning
rate can be lowered at each rollback (``lr_factor``). After more than ``max_rollbacks``
rollbacks within ``rollback_window`` iterations the run stops with an error instead of training
a dead network. The iteration counter of BasicSR's loop goes on (logs, validation and
checkpoints keep their numbers); the restored schedulers resume from the snapshot's position.

In distributed runs the decision is taken on the mean loss over all processes (one all-reduce)
and on the gradient norm, which DDP makes equal in every process: all processes roll back
together, to identical snapshots.
"""
import collections
import copy
import math
import statistics

import torch

#: ``train: guard`` keys and their defaults (our choices: docs/architecture.md).
GUARD_DEFAULTS = dict(loss_ratio=10.0, grad_ratio=None, window=100, snapshot_every=500, lr_factor=1.0,
                      max_rollbacks=3, rollback_window=10000)


def guard_options(value):
    """The guard's settings from ``train: guard``: ``true`` (the defaults), ``false`` / absent (``None``: no
    guard) or a mapping that updates :data:`GUARD_DEFAULTS`. Raises a ``ValueError`` naming the key."""
    if value in (None, False):
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f'train:guard must be true, false or a mapping of {", ".join(GUARD_DEFAULTS)}; got {value!r}')
    unknown = sorted(set(value) - set(GUARD_DEFAULTS))
    if unknown:
        raise ValueError(f'train:guard: unknown key(s) {", ".join(unknown)}; known: {", ".join(GUARD_DEFAULTS)}')
    opt = {**GUARD_DEFAULTS, **value}
    for key in ('loss_ratio', 'grad_ratio'):
        if opt[key] is not None and not (isinstance(opt[key], (int, float)) and opt[key] > 1):
            raise ValueError(f'train:guard:{key} must be a number above 1 (or null: off), got {opt[key]!r}')
    for key in ('window', 'snapshot_every', 'rollback_window'):
        if not (isinstance(opt[key], int) and opt[key] >= 1):
            raise ValueError(f'train:guard:{key} must be a positive integer, got {opt[key]!r}')
    if not (isinstance(opt['max_rollbacks'], int) and opt['max_rollbacks'] >= 0):
        raise ValueError(f'train:guard:max_rollbacks must be an integer >= 0, got {opt["max_rollbacks"]!r}')
    if not (isinstance(opt['lr_factor'], (int, float)) and 0 < opt['lr_factor'] <= 1):
        raise ValueError(f'train:guard:lr_factor must be in (0, 1], got {opt["lr_factor"]!r}')
    return opt


def _to_cpu(obj):
    """A deep copy of ``obj`` with every tensor cloned onto the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):  # dict, OrderedDict, Counter (a scheduler's milestones), ...
        new = copy.copy(obj)
        for key, value in obj.items():
            new[key] = _to_cpu(value)
        return new
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


class DivergenceGuard:
    """Trip detection, snapshots and rollback for a BasicSR model (see the module docstring).

    Args:
        opt (dict): The settings, as :func:`guard_options` returns them.
    """

    def __init__(self, opt):
        self.opt = opt
        self.losses = collections.deque(maxlen=opt['window'])
        self.grad_norms = collections.deque(maxlen=opt['window'])
        self.snapshots = []  # the two newest, oldest first
        self.rollbacks = []  # iterations at which the guard rolled back
        self.lr_scale = 1.0  # lr_factor ** rollbacks so far

    def loss_trip(self, loss):
        """Why ``loss`` (the mean over all processes) calls for a rollback, or ``None``."""
        return self._trip('loss', loss, self.losses, self.opt['loss_ratio'])

    def grad_trip(self, grad_norm):
        """Why ``grad_norm`` (the norm before any clipping) calls for a rollback, or ``None``."""
        return self._trip('gradient norm', grad_norm, self.grad_norms, self.opt['grad_ratio'])

    @staticmethod
    def _trip(name, value, history, ratio):
        if not math.isfinite(value):
            return f'non-finite {name} ({value})'
        if ratio is not None and len(history) >= min(10, history.maxlen):
            median = statistics.median(history)
            if value > ratio * median:
                return f'{name} {value:.4g} above {ratio:g} x the median {median:.4g} of the last {len(history)}'
        return None

    def record(self, loss, grad_norm):
        """Keep a good iteration's loss and gradient norm (when finite: an fp16 overflow is not) for the medians."""
        self.losses.append(loss)
        if math.isfinite(grad_norm):
            self.grad_norms.append(grad_norm)

    def snapshot_due(self, current_iter):
        return not self.snapshots or current_iter % self.opt['snapshot_every'] == 0

    def take_snapshot(self, model, current_iter):
        """Keep the model's training state of the end of ``current_iter`` (on the CPU)."""
        state = dict(iter=current_iter, lr_scale=self.lr_scale,
                     net_g=_to_cpu(model.get_bare_model(model.net_g).state_dict()),
                     optimizers=[_to_cpu(o.state_dict()) for o in model.optimizers],
                     schedulers=[_to_cpu(s.state_dict()) for s in model.schedulers])
        if getattr(model, 'net_g_ema', None) is not None:
            state['net_g_ema'] = _to_cpu(model.net_g_ema.state_dict())
        if getattr(model, 'scaler', None) is not None:
            state['scaler'] = model.scaler.state_dict()
        self.snapshots = (self.snapshots + [state])[-2:]

    def rollback(self, model, current_iter):
        """Restore the older kept snapshot into ``model``; returns its iteration.

        Raises ``FloatingPointError`` when this rollback is one more than ``max_rollbacks`` within
        ``rollback_window`` iterations (nothing is restored then).
        """
        window = self.opt['rollback_window']
        recent = [it for it in self.rollbacks if it > current_iter - window] + [current_iter]
        if len(recent) > self.opt['max_rollbacks']:
            raise FloatingPointError(
                f'The divergence guard rolled back {len(recent) - 1} time(s) within {window} iterations (at '
                f'iterations {", ".join(map(str, recent))}): training stopped, the last saved checkpoint is kept. '
                'Lower train:optim_g:lr, set train:grad_clip_norm, or raise train:guard:max_rollbacks.')
        self.rollbacks.append(current_iter)
        state = self.snapshots[0]
        self.snapshots = [state]  # the newer one may already hold weights that run away
        model.get_bare_model(model.net_g).load_state_dict(state['net_g'])
        if 'net_g_ema' in state:
            model.net_g_ema.load_state_dict(state['net_g_ema'])
        for optimizer, saved in zip(model.optimizers, state['optimizers']):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(model.schedulers, state['schedulers']):
            scheduler.load_state_dict(saved)
        if 'scaler' in state:
            model.scaler.load_state_dict(state['scaler'])
        self.lr_scale *= self.opt['lr_factor']
        self._scale_learning_rates(model, self.lr_scale / state['lr_scale'])
        return state['iter']

    @staticmethod
    def _scale_learning_rates(model, factor):
        """Multiply every learning rate the optimizers and BasicSR's schedulers and warm-up read."""
        if factor == 1:
            return
        for optimizer in model.optimizers:
            for group in optimizer.param_groups:
                for key in ('lr', 'initial_lr'):
                    if key in group:
                        group[key] *= factor
        for scheduler in model.schedulers:
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
