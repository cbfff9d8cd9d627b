"""The dry run: the plan (experiments, states, commands, iterations) at once and, with ``--time-estimate``, every
network timed here for an estimate of the time left. PyTorch and BasicSR are imported only to time."""
import copy
import json
import shlex
from pathlib import Path

from dsmnet_arch.reproduction.layout import describe, is_prepared, options_path, pair_count, status
from dsmnet_arch.reproduction.paper import DATASETS, PAPER_BATCH, PAPER_PAIRS
from dsmnet_arch.reproduction.runner import prepare_command, test_command, train_command

ESTIMATE_IMAGE = (321, 481)  # Rain100L/H test images: the test-time estimate times one of this size


def time_network(train_opt, iters, device):
    """Seconds per training step (random batch of the options' size) and per 321x481 test image, on ``device``.

    The step is :func:`~dsmnet_arch.benchmarks.training.make_training_step`, the one the benchmark times: the
    options' network and loss, Adam, autocast in the options' train:amp (fp16 with a gradient scaler), the gradient
    norm clipped at the options' train:grad_clip_norm.
    """
    import torch

    from dsmnet_arch.benchmarks.timing import mean_time
    from dsmnet_arch.benchmarks.training import make_training_step
    from dsmnet_arch.precision import autocast, train_precision

    from basicsr.archs import build_network
    from basicsr.losses import build_loss

    net = build_network(copy.deepcopy(train_opt['network_g'])).to(device)
    loss_fn = build_loss(copy.deepcopy(train_opt['train']['pixel_opt'])).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = train_opt['datasets']['train']
    lq, gt = torch.rand(2, data['batch_size_per_gpu'], 3, data['gt_size'], data['gt_size'], device=device)
    amp = train_precision(train_opt['train'], device)  # train:amp (or bf16: true), as DerainModel reads it
    clip = train_opt['train'].get('grad_clip_norm')
    per_iter = mean_time(make_training_step(net, loss_fn, optimizer, lq, gt, amp, grad_clip_norm=clip), iters, device)
    net.eval()
    image = torch.rand(1, 3, *ESTIMATE_IMAGE, device=device)

    def forward():
        with torch.no_grad(), autocast(device, amp):
            net(image)

    return per_iter, mean_time(forward, 1, device)


def time_metrics():
    """Seconds to score one 321x481 image in the metrics of METRICS (BasicSR computes them on the CPU)."""
    import numpy as np
    import torch

    import dsmnet_arch  # noqa: F401
    from dsmnet_arch.benchmarks.timing import first_call
    from dsmnet_arch.metrics.protocol_metrics import PROTOCOLS

    from basicsr.metrics import calculate_metric, calculate_psnr, calculate_ssim

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, *ESTIMATE_IMAGE, 3), dtype=np.uint8)

    def score():
        for y_channel in (True, False):
            calculate_psnr(a, b, crop_border=0, test_y_channel=y_channel)
            calculate_ssim(a, b, crop_border=0, test_y_channel=y_channel)
        for protocol in ('restormer', 'rcdnet'):
            for opt in PROTOCOLS[protocol].values():
                calculate_metric({'img': a, 'img2': b}, opt)

    return first_call(score, torch.device('cpu'))


def estimate(exp, out, args, timing, score_s):
    """Estimated seconds left for ``exp``: (training, validation + test, state, detail)."""
    state, detail = status(exp, out, args.gpus)
    if state == 'done':
        return 0., 0., state, detail
    total = exp.train_opt['train']['total_iter']
    done = total if state == 'trained' else detail if state == 'resume' else 0
    per_iter, per_image = timing
    images = pair_count(out, exp.dataset, 'test') or PAPER_PAIRS[exp.dataset][1]
    val_freq = exp.train_opt['val']['val_freq']
    passes = 1 + (total // val_freq - done // val_freq + 1 if state != 'trained' else 0)  # test + validations
    return (total - done) * per_iter, passes * images * (per_image + score_s), state, detail


def makespan(durations, jobs):
    """Wall time of running ``durations`` in order on ``jobs`` workers, each taking the next when free."""
    workers = [0.] * jobs
    for seconds in durations:
        workers[workers.index(min(workers))] += seconds
    return max(workers)


def speed_key(exp):
    """What sets the speed of ``exp``'s training step: experiments with the same key are timed once."""
    data = exp.train_opt['datasets']['train']
    return json.dumps([exp.train_opt['network_g'], data['batch_size_per_gpu'], data['gt_size'],
                       exp.train_opt['train'].get('amp'), exp.train_opt['train'].get('bf16')], sort_keys=True)


def print_plan_header(experiments, out, args, cuda_ids):
    """What the dry run does, the experiments' tables, GPUs and jobs, and the preparations still to run."""
    downloads = Path(args.data).resolve()
    print(f'Dry run: nothing is prepared, trained or tested; options files written to {out / "options"}.')
    print(f'Run from {out}; {len(experiments)} experiments for table(s) '
          f'{", ".join(map(str, sorted({t for exp in experiments for t in exp.tables}, key=str)))}, '
          f'{args.gpus} GPU(s) per training' + (' (BatchNorm synchronised: train:sync_bn)' if args.gpus > 1 and cuda_ids
                                                else ' (processes on the CPU: BatchNorm over each one\'s '
                                                f'{PAPER_BATCH // args.gpus} images)' if args.gpus > 1 else '')
          + f', {args.jobs} at a time.')
    for dataset in sorted({exp.dataset for exp in experiments}, key=DATASETS.index):
        if not is_prepared(out, dataset):
            print(f'prepare {dataset}: {shlex.join(prepare_command(downloads, out, dataset))}')


def start_timing(args, cuda_ids):
    """For --time-estimate: the device to time on, its name, and the seconds to score one test image."""
    import torch

    from dsmnet_arch.utils import keep_freed_memory

    keep_freed_memory()  # as the training and test programs do: on a CPU it changes the step time a lot
    device = torch.device('cuda' if cuda_ids else 'cpu')
    where = torch.cuda.get_device_name(0) if cuda_ids else f'the CPU (torch threads: {torch.get_num_threads()})'
    print(f'Timing on {where}: {args.estimate_iters} training iteration(s) per network after one warm-up, '
          f'batch {PAPER_BATCH // args.gpus} per GPU, and one {ESTIMATE_IMAGE[0]}x{ESTIMATE_IMAGE[1]} test '
          'image; data loading is not included.', flush=True)
    return device, where, time_metrics()


def print_experiment(number, exp, out, args, timing, score_s):
    """One experiment's lines: tables, data set, iterations, state, the estimate (with ``timing``: seconds per step
    and per test image) and the commands; returns its estimated seconds left (0 without ``timing``)."""
    state, detail = status(exp, out, args.gpus)
    pairs = pair_count(out, exp.dataset, 'train')
    pairs_note = f'{pairs} pairs' if pairs else f'the paper\'s {PAPER_PAIRS[exp.dataset][0]} pairs until prepared'
    print(f'{number:2d}. {exp.name}  tables {", ".join(map(str, exp.tables))}  {exp.dataset}  '
          f'{exp.train_opt["train"]["total_iter"]:,} iterations ({pairs_note})  {describe(state, detail)}')
    left = 0.
    if timing is not None:
        from dsmnet_arch.benchmarks.timing import duration

        train_s, eval_s, _, _ = estimate(exp, out, args, timing, score_s)
        left = train_s + eval_s
        print(f'    estimate: {timing[0]:.3f} s/iteration -> training {duration(train_s)}, '
              f'validation and test {duration(eval_s)}')
    print(f'    train: {shlex.join(train_command(options_path(out, "train", exp.name), args.gpus))}')
    print(f'    test:  {shlex.join(test_command(options_path(out, "test", exp.name)))}', flush=True)
    return left


def print_total(experiments, args, remaining, where):
    """The total iterations and, timed, the estimated work left (and wall time with --jobs)."""
    total = f'\nTotal: {sum(e.train_opt["train"]["total_iter"] for e in experiments):,} iterations'
    if not args.time_estimate:
        print(f'{total}. Not timed: add --time-estimate to time each of the {len({speed_key(e) for e in experiments})} '
              'networks here for an estimate.')
        return
    from dsmnet_arch.benchmarks.timing import duration

    print(f'{total}; estimated {duration(sum(remaining))} of work left' + (
        f', {duration(makespan(remaining, args.jobs))} with {args.jobs} at a time' if args.jobs > 1 else '') +
          f' on {where}.')


def dry_run(experiments, out, args, cuda_ids):
    """Print every step with its command and iterations, and the total; with --time-estimate, time every network
    here first and add the estimate. Without it nothing is built or timed: the plan prints at once."""
    print_plan_header(experiments, out, args, cuda_ids)
    timings, score_s, device, where = {}, 0., None, None
    if args.time_estimate:
        device, where, score_s = start_timing(args, cuda_ids)
    print()
    remaining = []
    for number, exp in enumerate(experiments, 1):
        timing = None
        if args.time_estimate:
            key = speed_key(exp)
            if key not in timings:
                timings[key] = time_network(exp.train_opt, args.estimate_iters, device)
            timing = timings[key]
        remaining.append(print_experiment(number, exp, out, args, timing, score_s))
    print_total(experiments, args, remaining, where)
