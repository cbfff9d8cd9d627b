"""BasicSR model for single-image deraining with DSM-Net."""
import math
from collections import OrderedDict
from os import path as osp

import torch
from torch.nn.parallel import DistributedDataParallel

from dsmnet_arch import precision
from dsmnet_arch.checkpoint import (
    ARCH_KEY,
    arch_mismatch,
    arch_record,
    atomic_save,
    load_checkpoint,
    state_dict_from_checkpoint,
)
from dsmnet_arch.models.divergence_guard import DivergenceGuard, guard_options
from dsmnet_arch.models.training_step import TrainingStep

from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

NONFINITE_CHOICES = ('stop', 'skip')


@MODEL_REGISTRY.register()
class DerainModel(SRModel):
    """BasicSR's SRModel (scale 1) with what long deraining runs need.

    Options under ``train``, besides SRModel's (:attr:`TRAIN_OPTIONS`):
        grad_clip_norm (float | None): clip the gradients to this total norm before each optimizer step
            (``torch.nn.utils.clip_grad_norm_``). Default: None (no clipping). The norm before clipping is
            logged as ``grad_norm``. Our options files set 0.1 (docs/architecture.md, "Training stability").
        guard (bool | dict): the divergence guard (:mod:`dsmnet_arch.models.divergence_guard`): rolls the
            run back to a state kept in memory after a loss spike or a non-finite loss or gradient, and stops
            after too many rollbacks. ``true`` for the defaults, or a mapping of its settings
            (``loss_ratio``, ``grad_ratio``, ``window``, ``snapshot_every``, ``lr_factor``, ``max_rollbacks``,
            ``rollback_window``). Default: off. With the guard on, ``nonfinite_loss`` must not be set.
        nonfinite_loss (str): without the guard, what a NaN or infinite loss does. ``stop`` (default) ends
            the run with an error naming the iteration and each loss term; ``skip`` drops the batch
            (no optimizer step) and goes on. The decision is shared by all processes in a
            distributed run, so no process waits for another forever.
        amp (str | bool): mixed precision: the network's forward pass under ``torch.autocast`` in
            ``bf16`` (CPUs and GPUs with bfloat16 arithmetic: Ampere and later) or ``fp16`` (CUDA GPUs
            only, for those without bf16 such as V100, T4, RTX 20xx), or ``false`` (default: fp32).
            Weights, optimizer and loss stay fp32. fp16 scales the loss with a gradient scaler
            (``torch.amp.GradScaler``): a step whose scaled gradients overflow is skipped and the scale
            lowered, which is the scaler's normal business, not a non-finite loss; the scale is logged as
            ``grad_scale`` and kept in the training state. ``bf16: true`` is the older spelling of
            ``amp: bf16`` and still works.
        compile (bool | dict): ``torch.compile`` the network for training: ``true`` or a mapping of
            ``torch.compile`` arguments (e.g. ``{mode: max-autotune}``). Default: False. Validation and
            the saved weights use the network itself, so checkpoints keep their plain keys.
        sync_bn (bool): in a distributed run, convert the network's BatchNorm layers to
            ``torch.nn.SyncBatchNorm`` before DDP wraps it, so that their statistics (and running
            statistics) are over the whole batch of all processes, not over each process's
            ``batch_size_per_gpu`` images. Needs GPUs (PyTorch synchronises GPU tensors only); without a
            distributed run it does nothing and says so in the log. Default: False. The state-dict keys
            are BatchNorm's, so checkpoints load into an unconverted network.

    Checkpoints (``models/*.pth``) and training states (``training_states/*.state``) are written
    atomically; a checkpoint also records the network's arguments (``dsmnet_arch.checkpoint``) and a
    training state also keeps the best-metric record, so a resumed run reports
    the same "Best: ... @ iter" as the run it continues.

    What DerainModel changes of BasicSR's SRModel, it changes by overriding (BasicSR's own classes are left
    as they are): :meth:`load_network` (weights only, the recorded network checked), :meth:`test`
    (validation on the bare network), :meth:`model_to_device` (SyncBatchNorm, DDP on the CPU) and
    :meth:`get_bare_model` (through ``torch.compile``).
    """

    #: The ``train`` keys DerainModel reads besides SRModel's (the options checker knows them from here).
    TRAIN_OPTIONS = ('grad_clip_norm', 'guard', 'nonfinite_loss', 'amp', 'bf16', 'compile', 'sync_bn')

    def model_to_device(self, net):
        """BasicSR's placement and DDP wrapping, with two changes. With ``train:sync_bn`` true in a distributed
        run the BatchNorm layers become ``torch.nn.SyncBatchNorm`` first. The processes of a distributed run
        on the CPU (gloo) get DDP without ``device_ids``: BasicSR passes the current CUDA device, which fails
        without one. (BasicSR builds net_g through this; the EMA copy, used only for validation and saving,
        is not.)"""
        if self._sync_bn():
            count = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            get_root_logger().info(f'train:sync_bn: {count} BatchNorm layers of {type(net).__name__} synchronised '
                                   f'over {torch.distributed.get_world_size()} processes (torch.nn.SyncBatchNorm)')
        if self.opt['dist'] and self.device.type != 'cuda':
            return DistributedDataParallel(net.to(self.device), device_ids=None,
                                           find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    def _sync_bn(self):
        """Whether ``train:sync_bn`` converts the network: true in a distributed run on GPUs. A one-line
        ``ValueError`` names the option for a value other than true/false and for a distributed CPU run."""
        sync_bn = (self.opt.get('train') or {}).get('sync_bn', False) if self.is_train else False
        if not (sync_bn is None or isinstance(sync_bn, bool)):
            raise ValueError(f'train:sync_bn must be true or false, got {sync_bn!r}')
        if not sync_bn:
            return False
        if not self.opt['dist']:
            get_root_logger().info('train:sync_bn: true does nothing without a distributed run (one process '
                                   'sees the whole batch): BatchNorm layers kept')
            return False
        if self.device.type == 'cpu':
            raise ValueError('train:sync_bn: true needs GPUs (torch.nn.SyncBatchNorm synchronises GPU tensors '
                             'only) and this distributed run trains on the CPU; set train:sync_bn: false')
        return True

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.nonfinite_loss = train_opt.get('nonfinite_loss', 'stop')
        if self.nonfinite_loss not in NONFINITE_CHOICES:
            raise ValueError(f'train:nonfinite_loss must be one of {NONFINITE_CHOICES}, '
                             f'got {self.nonfinite_loss!r}')
        guard_opt = guard_options(train_opt.get('guard'))
        if guard_opt is not None and 'nonfinite_loss' in train_opt:
            raise ValueError('train:nonfinite_loss has no effect with train:guard (a non-finite loss rolls back): '
                             'remove one of them')
        self.guard = DivergenceGuard(guard_opt) if guard_opt is not None else None
        self.grad_clip_norm = train_opt.get('grad_clip_norm')
        if self.grad_clip_norm is not None and not (isinstance(self.grad_clip_norm, (int, float))
                                                    and self.grad_clip_norm > 0):
            raise ValueError(f'train:grad_clip_norm must be a positive number or null, got {self.grad_clip_norm!r}')
        self.amp = precision.train_precision(train_opt, self.device)
        self.scaler = precision.grad_scaler(self.device, self.amp)
        compile_opt = train_opt.get('compile', False)
        compile_args = precision.compile_kwargs(compile_opt) if compile_opt else None
        super().init_training_settings()
        logger = get_root_logger()
        if self.amp:
            logger.info(f'Mixed precision: autocast {self.amp}' + (' with a gradient scaler' if self.scaler else ''))
        if compile_args is not None:  # after the optimizer is built on the network's own parameters
            logger.info(f'torch.compile of the network for training ({compile_args}): the first iterations '
                        'compile it')
            self.net_g = torch.compile(self.net_g, **compile_args)

    def get_bare_model(self, net):
        """The network inside the wrappers of ``torch.compile`` (``_orig_mod``), DDP and DataParallel.

        Saving, loading, EMA and validation go through this, so checkpoints of a compiled run have the
        keys of the network itself and validation runs it eagerly.
        """
        return super().get_bare_model(getattr(net, '_orig_mod', net))

    def test(self):
        """Validation's forward pass: the bare network (the EMA copy when there is one) in eval mode without
        gradients, its mode restored afterwards. BasicSR's SRModel runs ``net_g`` itself, in distributed runs
        the DDP wrapper on rank 0 alone: DDP broadcasts buffers (BatchNorm statistics) in every forward, a
        collective the other ranks never join (a hang on nccl, a crash on gloo); and a compiled ``net_g``
        would be compiled again for every new image size."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq)
        net.train(was_training)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's loading (``params_ema`` falls back to ``params``, a ``module.`` prefix is dropped), of an
        untrusted file (weights only: :func:`dsmnet_arch.checkpoint.load_checkpoint`), with one-line errors that
        name the file. Where the checkpoint records its network (:mod:`dsmnet_arch.checkpoint`), weights of
        another one whose shapes fit (DSM-Net's Table 5 variants all fit each other) are refused (``strict``)
        or loaded with a warning naming the differing arguments."""
        net = self.get_bare_model(net)
        checkpoint = load_checkpoint(load_path)
        state_dict, param_key = state_dict_from_checkpoint(checkpoint, load_path, param_key)
        network_opt = next((v for k, v in self.opt.items() if k.startswith('network_') and isinstance(v, dict)
                            and v.get('type') == type(net).__name__), None)
        differ = arch_mismatch(checkpoint, load_path, network_opt, type(net))
        if differ:
            message = (f'Weights in {load_path} were saved from another {type(net).__name__}: '
                       f'{"; ".join(differ)} (options vs checkpoint)')
            if strict:
                raise ValueError(f'{message}; make the options match, or load them anyway with strict loading off '
                                 '(path: strict_load_g: false)')
            get_root_logger().warning(message)
        get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, '
                               f'with param key: [{param_key}].')
        self._print_different_keys_loading(net, state_dict, strict)
        try:
            net.load_state_dict(state_dict, strict=strict)
        except RuntimeError as err:
            raise ValueError(f'Weights in {load_path} do not fit {net.__class__.__name__}: '
                             f'{str(err).splitlines()[0]}') from None

    def optimize_parameters(self, current_iter):
        """One training step (:class:`~dsmnet_arch.models.training_step.TrainingStep`: forward, loss, backward,
        gradient clipping, optimizer step) with DerainModel's decisions between its phases: the loss averaged
        over processes, the non-finite-loss policy or the divergence guard, and the EMA update after a step."""
        step = self._training_step()
        if self.nonfinite_loss == 'skip':  # a skipped batch leaves no BatchNorm statistics (never set with the guard)
            buffers = [b.clone() for b in self.net_g.buffers()]
        self.output, loss_dict, l_total = step.forward(self.lq, self.gt)
        loss = self._mean_over_processes(l_total)
        if self.guard is not None:
            grad_norm = self._guarded_step(step, l_total, loss, current_iter)
        elif math.isfinite(loss):
            grad_norm = step.backward(l_total)
            self._step(step)
        else:
            terms = ', '.join(f'{k}={v.item():.4g}' for k, v in loss_dict.items())
            message = f'Non-finite loss at iteration {current_iter}: {terms}'
            if self.nonfinite_loss == 'stop':
                raise FloatingPointError(f'{message}. Training stopped; the last saved checkpoint is kept. '
                                         'Set train:nonfinite_loss: skip to drop such batches instead.')
            get_root_logger().warning(f'{message}; batch skipped (train:nonfinite_loss: skip).')
            for live, saved in zip(self.net_g.buffers(), buffers):
                live.copy_(saved)
            grad_norm = float('nan')
        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.log_dict['grad_norm'] = grad_norm
        if self.scaler is not None:
            self.log_dict['grad_scale'] = self.scaler.get_scale()

    def _training_step(self):
        """The step of the model's network, loss terms, optimizer, precision, scaler and clipping as they are
        now (a step keeps no state of its own; the guard's rollback and a resume change only their states)."""
        return TrainingStep(self.net_g, self._losses, self.optimizer_g, self.device, self.amp, self.scaler,
                            self.grad_clip_norm)

    def _losses(self, output, gt):
        """The loss terms BasicSR's SRModel computes, by name."""
        loss_dict = OrderedDict()
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(output, gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, gt)
            if l_percep is not None:
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                loss_dict['l_style'] = l_style
        return loss_dict

    def _step(self, step):
        """The optimizer step (through the scaler, which skips it when the gradients overflowed), then EMA."""
        step.step()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _guarded_step(self, step, l_total, loss, current_iter):
        """Backward and step under the divergence guard; returns the gradient norm (NaN when the iteration
        tripped the guard and the training state was rolled back instead)."""
        trip = self.guard.loss_trip(loss)
        if trip is None:
            grad_norm = step.backward(l_total)
            if self.scaler is None or math.isfinite(grad_norm):  # an fp16 overflow is the scaler's to skip
                trip = self.guard.grad_trip(grad_norm)
        if trip is not None:
            self._roll_back(trip, current_iter)
            return float('nan')
        self._step(step)
        self.guard.record(loss, grad_norm)
        if self.guard.snapshot_due(current_iter):
            self.guard.take_snapshot(self, current_iter)
        return grad_norm

    def _roll_back(self, trip, current_iter):
        """Restore the divergence guard's snapshot (or stop the run) after an iteration that tripped it."""
        self.optimizer_g.zero_grad(set_to_none=True)
        restored = self.guard.rollback(self, current_iter)
        lr = ', '.join(f'{lr:.3g}' for lr in self.get_current_learning_rate())
        get_root_logger().warning(f'Divergence guard at iteration {current_iter}: {trip}; rolled back to the state of '
                                  f'iteration {restored} (rollback {len(self.guard.rollbacks)}), learning rate {lr}.')

    def _mean_over_processes(self, loss):
        """The loss as a float, averaged over all processes in distributed runs (non-finite if it is in any)."""
        loss = loss.detach().float()
        if self.opt['dist']:
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss /= torch.distributed.get_world_size()
        return loss.item()

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network needs one param_key per network')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[key] = OrderedDict((k, v.cpu()) for k, v in state_dict.items())
        network_opt = self.opt.get(f'network_{net_label.removeprefix("net_")}')
        if network_opt:  # the network's arguments beside its weights (dsmnet_arch.checkpoint)
            save_dict[ARCH_KEY] = arch_record(network_opt, type(self.get_bare_model(nets[0])))
        name = 'latest' if current_iter == -1 else current_iter
        atomic_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{name}.pth'))

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            # plain floats: numpy scalars from basicsr.metrics would not load with weights_only=True
            'best_metric_results': {
                dataset: {metric: dict(record, val=float(record['val'])) for metric, record in records.items()}
                for dataset, records in getattr(self, 'best_metric_results', {}).items()
            },
        }
        if self.scaler is not None:
            state['scaler'] = self.scaler.state_dict()  # plain numbers
        atomic_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        """Optimizer, scheduler, best-metric record and gradient scaler from a training state.

        States saved on another device resume here (``dsmnet_arch.compat`` loads them onto the CPU,
        and ``load_state_dict`` puts each tensor where a fresh optimizer keeps it). States without a
        scaler (saved without fp16, or by older versions) start the scaler afresh.
        """
        super().resume_training(resume_state)
        best = resume_state.get('best_metric_results')
        if best:
            self.best_metric_results = {name: dict(metrics) for name, metrics in best.items()}
        scaler_state = resume_state.get('scaler')
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        elif self.scaler is not None:
            get_root_logger().info('The training state holds no gradient scaler state: the scaler starts afresh.')
        elif scaler_state:
            get_root_logger().info(f'Gradient scaler state ignored: train:amp is {self.amp or "false"}, not fp16.')

