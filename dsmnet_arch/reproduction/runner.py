"""Running the experiments: the preparation, training and test commands as subprocesses with their logs, one
after the other or ``--jobs`` at once on their own GPUs, and their failures in one line."""
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from dsmnet_arch.reproduction.layout import (
    describe,
    fingerprint,
    options_path,
    prepared_dir,
    run_dir,
    status,
    write_json,
)
from dsmnet_arch.reproduction.paper import METRICS
from dsmnet_arch.reproduction.plan import REPO

TRAIN_ENTRY = REPO / 'dsmnet_arch' / 'train.py'
TEST_ENTRY = REPO / 'dsmnet_arch' / 'test.py'
PREPARE_ENTRY = REPO / 'scripts' / 'prepare_rain_datasets.py'


def train_command(opt_path, gpus):
    launcher = [sys.executable]
    if gpus > 1:
        launcher += ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={gpus}']
    return launcher + [str(TRAIN_ENTRY), '-opt', str(opt_path), '--auto_resume'] + (
        ['--launcher', 'pytorch'] if gpus > 1 else [])


def test_command(opt_path):
    return [sys.executable, str(TEST_ENTRY), '-opt', str(opt_path)]


def prepare_command(data, out, dataset):
    return [sys.executable, str(PREPARE_ENTRY), '--dataset', dataset, '--src', str(data / dataset), '--dst',
            str(prepared_dir(out, dataset))]


def run_logged(cmd, log_path, cwd, env=None):
    """Run ``cmd`` in ``cwd``, its output appended to ``log_path``; return its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'a') as log:
        log.write(f'\n# {time.strftime("%Y-%m-%d %H:%M:%S")} in {cwd}\n$ {shlex.join(cmd)}\n')
        log.flush()
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def failure(what, returncode, log_path):
    """'training exit 1: error: ... (log: path)': the failing step, its status and its last words."""
    lines = [line.strip() for line in log_path.read_text(errors='replace').splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    last = (errors or lines or [''])[-1]
    how = f'killed by signal {-returncode}' if returncode < 0 else f'exit {returncode}'
    return f'{what} {how}: {last[:200]} (log: {log_path})'


def read_test_metrics(results_dir):
    """The last value of each metric in the newest BasicSR test log of ``results_dir`` (``# psnr_y: 38.1234``)."""
    logs = sorted(results_dir.glob('test_*.log'), key=lambda p: p.stat().st_mtime)
    if not logs:
        return {}
    return {key: float(value) for key, value in re.findall(r'# (\w+): (\S+)', logs[-1].read_text())}


class Runner:
    """Runs experiments one after the other, or --jobs at once on their own GPUs, and prints progress."""

    def __init__(self, args, out, cuda_ids):
        self.args, self.out = args, out
        self.lock = threading.Lock()
        self.failures = {}  # experiment or dataset name -> message
        self.slots = [cuda_ids[i * args.gpus:(i + 1) * args.gpus] for i in range(args.jobs)] if cuda_ids else []

    def say(self, message):
        with self.lock:
            print(message, flush=True)

    def env(self, slot):
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if slot:
            env['CUDA_VISIBLE_DEVICES'] = ','.join(slot)
        return env

    def map(self, function, items):
        """``function(item, slot)`` for every item, --jobs at a time; each call has a GPU slot of its own."""
        free = list(self.slots) or [None] * self.args.jobs

        def call(item):
            with self.lock:
                slot = free.pop()
            try:
                return function(item, slot)
            finally:
                with self.lock:
                    free.append(slot)

        with ThreadPoolExecutor(self.args.jobs) as pool:
            futures = [pool.submit(call, item) for item in items]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def fail(self, name, tag, message):
        self.failures[name] = message
        self.say(f'FAILED {tag}: {message}')

    def prepare(self, dataset, slot):
        log = self.out / 'runs' / f'prepare_{dataset}.log'
        self.say(f'prepare {dataset} -> {prepared_dir(self.out, dataset)} (log: {log})')
        code = run_logged(prepare_command(Path(self.args.data).resolve(), self.out, dataset), log, self.out,
                          self.env(slot))
        if code:
            self.fail(dataset, dataset, failure('preparation', code, log))

    def experiment(self, exp, slot):
        """Train (or resume) and test ``exp`` unless finished; record its metrics in runs/<name>/metrics.json."""
        tag = f'{exp.name} (table{"s" if len(exp.tables) > 1 else ""} {", ".join(map(str, exp.tables))})'
        runs = run_dir(self.out, exp.name)
        if exp.dataset in self.failures:
            return self.fail(exp.name, tag, f'{exp.dataset} is not prepared')
        state, detail = status(exp, self.out, self.args.gpus)
        if state == 'changed':
            return self.fail(exp.name, tag, f'{describe(state, detail)}; use the same --scale/--override, another '
                             f'--out, or delete {self.out / "experiments" / exp.name} and {runs}')
        if state == 'done':
            return self.say(f'skip {tag}: {describe(state, detail)}')
        write_json(runs / 'settings.json', fingerprint(exp.train_opt, self.args.gpus))
        if state != 'trained':
            self.say(f'train {tag}: {exp.train_opt["train"]["total_iter"]:,} iterations'
                     + (f', from iteration {detail}' if state == 'resume' else '') + f' (log: {runs / "train.log"})')
            code = run_logged(train_command(options_path(self.out, 'train', exp.name), self.args.gpus),
                              runs / 'train.log', self.out, self.env(slot))
            if code:
                return self.fail(exp.name, tag, failure('training', code, runs / 'train.log'))
        self.say(f'test {tag} (log: {runs / "test.log"})')
        code = run_logged(test_command(options_path(self.out, 'test', exp.name)), runs / 'test.log', self.out,
                          self.env(slot[:1] if slot else slot))
        if code:
            return self.fail(exp.name, tag, failure('test', code, runs / 'test.log'))
        metrics = read_test_metrics(self.out / 'results' / exp.name)
        missing = [m for m in METRICS if m not in metrics]
        if missing:
            return self.fail(exp.name, tag, f'no {", ".join(missing)} in the test log of {exp.name}')
        write_json(runs / 'metrics.json', {'experiment': exp.name, 'dataset': exp.dataset,
                                           'network_g': exp.train_opt['network_g'],
                                           'total_iter': exp.train_opt['train']['total_iter'],
                                           'finished': time.strftime('%Y-%m-%d %H:%M:%S'), **metrics})
        self.say(f'done {tag}: PSNR/SSIM Y {metrics["psnr_y"]:.2f}/{metrics["ssim_y"]:.4f}, '
                 f'RGB {metrics["psnr_rgb"]:.2f}/{metrics["ssim_rgb"]:.4f}')

