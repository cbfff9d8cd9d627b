"""BasicSR model for single-image deraining with DSM-Net."""
from collections import OrderedDict
from os import path as osp

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from dsmnet_arch.checkpoint import ARCH_KEY, arch_record, atomic_save

NONFINITE_CHOICES = ('stop', 'skip')


@MODEL_REGISTRY.register()
class DerainModel(SRModel):
    """BasicSR's SRModel (scale 1) with what long deraining runs need.

    Options under ``train``, besides SRModel's:
        nonfinite_loss (str): what a NaN or infinite loss does. ``stop`` (default) ends the run
            with an error naming the iteration and each loss term; ``skip`` drops the batch
            (no optimizer step) and goes on. The decision is shared by all processes in a
            distributed run, so no process waits for another forever.
        bf16 (bool): run forward and loss under ``torch.autocast`` in bfloat16 (GPUs with bf16,
            and CPUs). Weights, optimizer and loss reduction stay fp32. Default: False.

    Checkpoints (``models/*.pth``) and training states (``training_states/*.state``) are written
    atomically; a checkpoint also records the network's arguments (``dsmnet_arch.checkpoint``) and a
    training state also keeps the best-metric record, so a resumed run reports
    the same "Best: ... @ iter" as the run it continues.
    """

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.nonfinite_loss = train_opt.get('nonfinite_loss', 'stop')
        if self.nonfinite_loss not in NONFINITE_CHOICES:
            raise ValueError(f'train:nonfinite_loss must be one of {NONFINITE_CHOICES}, '
                             f'got {self.nonfinite_loss!r}')
        self.use_bf16 = bool(train_opt.get('bf16', False))
        super().init_training_settings()

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.nonfinite_loss == 'skip':  # a skipped batch must not leave its BatchNorm statistics behind
            buffers = [b.clone() for b in self.net_g.buffers()]
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            self.output = self.net_g(self.lq)
        output = self.output.float()

        loss_dict = OrderedDict()
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            if l_percep is not None:
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                loss_dict['l_style'] = l_style
        l_total = sum(loss_dict.values())

        if self._loss_is_finite(l_total):
            l_total.backward()
            self.optimizer_g.step()
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        else:
            terms = ', '.join(f'{k}={v.item():.4g}' for k, v in loss_dict.items())
            message = f'Non-finite loss at iteration {current_iter}: {terms}'
            if self.nonfinite_loss == 'stop':
                raise FloatingPointError(f'{message}. Training stopped; the last saved checkpoint is kept. '
                                         'Set train:nonfinite_loss: skip to drop such batches instead.')
            get_root_logger().warning(f'{message}; batch skipped (train:nonfinite_loss: skip).')
            self.optimizer_g.zero_grad(set_to_none=True)
            for live, saved in zip(self.net_g.buffers(), buffers):
                live.copy_(saved)
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def _loss_is_finite(self, loss):
        """True when the loss is finite in every process (one all-reduce in distributed runs)."""
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.opt['dist']:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

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
        atomic_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        best = resume_state.get('best_metric_results')
        if best:
            self.best_metric_results = {name: dict(metrics) for name, metrics in best.items()}
