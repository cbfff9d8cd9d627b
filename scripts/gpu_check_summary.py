"""The summary table of ``scripts/gpu_check.sh``: its steps, the CUDA tests and the GPU benchmarks, as markdown.

    python scripts/gpu_check_summary.py OUTDIR

Reads what gpu_check.sh left in OUTDIR: ``steps.tsv`` (step, exit status, seconds, limit), ``cuda_tests.xml``
(pytest's JUnit XML) and ``benchmark_*.json`` (scripts/benchmark.py, complete or cut short). Prints the
summary; the exit status is 1 when a step failed or overran its limit, or a test failed, else 0.
"""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.benchmarks.timing import duration  # noqa: E402

TIMED_OUT = (124, 137)  # timeout's status, and that of a command it had to kill


def read_steps(folder):
    """``[(name, status, seconds, limit)]`` of the steps that ran."""
    path = os.path.join(folder, 'steps.tsv')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(name, int(status), int(seconds), int(limit))
                for name, status, seconds, limit in (line.rstrip('\n').split('\t') for line in f if line.strip())]


def read_tests(path):
    """Counts of the JUnit XML (passed, failed, skipped) and the names of the failed tests; ``None`` without it."""
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == 'testsuite' else root.findall('testsuite')
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    failed, skipped = [], []
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter('testcase'):
            if case.find('failure') is not None or case.find('error') is not None:
                failed.append(case.get('name'))
            reason = case.find('skipped')
            if reason is not None:
                skipped.append(reason.get('message', ''))
    bad = counts['failures'] + counts['errors']
    return dict(passed=counts['tests'] - bad - counts['skipped'], failed=bad, skipped=counts['skipped'],
                failed_names=failed, skip_reasons=sorted(set(skipped)))


def step_result(status, limit, tests=None):
    if status in TIMED_OUT:
        return f'timed out after {limit} s'
    if tests is not None:
        text = f'{tests["passed"]} passed, {tests["failed"]} failed, {tests["skipped"]} skipped'
        if tests['failed_names']:
            text += ': ' + ', '.join(tests['failed_names'])
        if tests['skip_reasons']:
            text += ' (skipped: ' + '; '.join(tests['skip_reasons']) + ')'
        return text
    return 'done' if status == 0 else f'failed (exit status {status})'


def gib(value):
    return '' if value is None else f'{value / 2**30:.2f} GiB'


def time_cell(row, first):
    """A time in ms, with the speed-up over eager and the compiling ``first`` call for a compiled run."""
    time = f'{row["seconds"] * 1e3:,.1f} ms'
    if 'speedup' in row:
        time += f' ({row["speedup"]:.2f}x eager; first {first} {row["first_call_seconds"]:,.0f} s)'
    return time


def train_cells(step):
    """Training step, it/s, fraction of the reference and peak memory; empty where not measured."""
    if not step:
        return [''] * 4
    return [time_cell(step, 'step'), f'{step["iters_per_s"]:,.1f}', f'{step["fraction"]:.2f}', gib(step['peak_bytes'])]


def inference_cells(row):
    """Inference time and fraction of the reference; empty where not measured."""
    if not row:
        return [''] * 2
    return [time_cell(row, 'call'), f'{row["fraction"]:.2f}']


def benchmark_row(results):
    """The table row of one benchmark's JSON: its compiled figures for a ``--compile`` run, else the eager ones;
    empty cells for what a run cut short did not measure."""
    h = results['header']
    reference = results.get('reference')
    label = h['precision'] + (', compiled' if h.get('compile') else '') + (', quick' if h['preset'] == 'quick' else '')
    label += '' if h.get('complete') else ' (cut short)'
    cells = [label, f'{reference["train"]["gflops"]:,.1f}' if reference else '']
    if h.get('compile'):
        compiled = results.get('compiled', {})
        return cells + train_cells(compiled.get('train_step')) + inference_cells(compiled.get('inference')) + [''] * 5
    side = reference['inference']['shape'][-1] if reference else None
    whole = next((row for row in results.get('inference', []) if row['shape'][-1] == side), None)
    tiled = results.get('tiled')
    protocol = [duration(p['seconds']) for p in results.get('protocol', [])] or [''] * 4
    return (cells + train_cells(results.get('train_step')) + inference_cells(whole) +
            [f'{tiled["ms_per_mp"]:,.0f}' if tiled else ''] + protocol)


def summary(folder):
    """The markdown summary and whether everything passed."""
    steps = read_steps(folder)
    tests = read_tests(os.path.join(folder, 'cuda_tests.xml'))
    runs = []
    for path in glob.glob(os.path.join(folder, 'benchmark_*.json')):
        with open(path) as f:
            runs.append(json.load(f))
    runs.sort(key=lambda r: (bool(r['header'].get('compile')), r['header']['precision'] != 'fp32'))  # fp32 first
    header = runs[0]['header'] if runs else {}
    gpu = header.get('gpu') or {}
    title = f'# gpu_check: {header.get("device_name", "no benchmark ran")}'
    if gpu:
        title += (f', {gpu["memory_bytes"] / 2**30:.0f} GiB, compute capability {gpu["capability"]}; '
                  f'torch {header["torch"]}, CUDA {gpu["cuda"]}, {header["date"]}')
    lines = [title, '', '| step | result | time |', '|---|---|---:|']
    ok = bool(steps)
    for name, status, seconds, limit in steps:
        counts = tests if name == 'CUDA tests' and status not in TIMED_OUT else None
        lines.append(f'| {name} | {step_result(status, limit, counts)} | {seconds} s |')
        ok = ok and status == 0
    if runs:
        side = runs[0].get('reference', {}).get('inference', {}).get('shape', [0])[-1]
        lines += ['', f'| run | reference fwd + bwd, GF/s | training step | it/s | of reference | peak memory, '
                  f'training | {side}^2 inference | of reference | 12 MP tiled, ms/MP | Rain100H | Rain100L | '
                  'Rain800 | Rain1400 |', '|---|' + '---:|' * 12]
        lines += ['| ' + ' | '.join(benchmark_row(results)) + ' |' for results in runs]
        lines += ['', 'Training step: the paper\'s batch (32 patches of 64 x 64), forward, loss, backward, Adam; '
                  '"of reference": its GFLOP/s over those of a 3x3 convolution in the same precision. Peak memory: '
                  'torch.cuda.max_memory_allocated. Rain100H..Rain1400: the paper\'s protocol, total_iter of '
                  'options/train_DSMNet_<set>.yml x the training step (data loading and validation left out). '
                  'Compiled: torch.compile\'d network against the eager one timed in the same run. Details: the '
                  'benchmark_*.json files and docs/benchmarks.md.']
    return '\n'.join(lines), ok and (tests is None or tests['failed'] == 0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    text, ok = summary(argv[0])
    print(text)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
