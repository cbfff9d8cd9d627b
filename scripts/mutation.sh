#!/usr/bin/env bash
# Mutation testing of the numeric core and the checkpoint and resume code (docs/mutation.md). Not part of CI.
#
#   bash scripts/mutation.sh [archs|losses|tiling|checkpoint|resume ...]    (default: all five)
#   bash scripts/mutation.sh --score [module ...]    the scores of the last run again (e.g. after editing the doc)
#
# Copies the working tree (tracked and untracked files, not ignored ones) to $MUTATION_DIR (default:
# /tmp/dsmnet_mutation; emptied first), runs mutmut there module by module ([mutation] in setup.cfg says
# which mutants each module has; [mutmut] the tests), and prints each module's mutation score and the
# survivors that docs/mutation.md does not account for. mutmut (requirements-mutation.txt) is
# installed into .venv when missing. MUTATION_JOBS: parallel mutants (default: the number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
source scripts/setup_env.sh
WORK="${MUTATION_DIR:-${TMPDIR:-/tmp}/dsmnet_mutation}"
JOBS="${MUTATION_JOBS:-$(nproc)}"
MARK=.dsmnet-mutation

pinned="$(grep -E '^mutmut==' requirements-mutation.txt | cut -d= -f3)"
if [ "$(python -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null)" != "$pinned" ]; then
    echo "mutation: installing mutmut $pinned into $(dirname "$(dirname "$(command -v python)")")"
    python -m pip install --disable-pip-version-check -q -r requirements-mutation.txt
fi

SCORE_ONLY=0
if [ "${1:-}" = --score ]; then SCORE_ONLY=1; shift; fi
mapfile -t ALL < <(python -c 'import configparser; c = configparser.ConfigParser(); c.read("setup.cfg")
print("\n".join(c["mutation"]))')
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=("${ALL[@]}")
for module in "${MODULES[@]}"; do
    [[ " ${ALL[*]} " == *" $module "* ]] || { echo "mutation: unknown module $module (one of: ${ALL[*]})" >&2; exit 2; }
done

copy_working_tree() {  # mutmut writes mutants/ where it runs, and the tests must see these sources
    WORK="$(mkdir -p "$WORK" && cd "$WORK" && pwd)"
    case "$WORK/" in "$ROOT/"*) echo "mutation: MUTATION_DIR must lie outside the repository" >&2; exit 2 ;; esac
    if [ -n "$(ls -A "$WORK")" ] && [ ! -e "$WORK/$MARK" ]; then
        echo "mutation: $WORK is not empty and was not made by this script; set MUTATION_DIR" >&2; exit 2
    fi
    find "$WORK" -mindepth 1 -delete
    touch "$WORK/$MARK"
    git ls-files -z -co --exclude-standard |
        tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$WORK" -xf -  # files deleted: left out
}

run_module() {  # mutmut on the mutants of one module ([mutation] in setup.cfg), in $WORK
    local module=$1 start patterns
    mapfile -t patterns < <(python -c 'import configparser, sys; c = configparser.ConfigParser(); c.read("setup.cfg")
print("\n".join(c["mutation"][sys.argv[1]].split()))' "$module")
    start=$(date +%s)
    # idle OpenMP threads sleep (as in scripts/test.sh), one thread per test process: a shared CPU
    if ! OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 mutmut run --max-children "$JOBS" "${patterns[@]}" \
            > "mutmut-$module.log" 2>&1; then
        tail -n 30 "mutmut-$module.log" >&2
        echo "mutation: mutmut failed on $module (log: $WORK/mutmut-$module.log)" >&2
        exit 1
    fi
    echo "$module $(($(date +%s) - start))" >> seconds.txt
    echo "mutation: $module done in $(($(date +%s) - start)) s"
}

if [ "$SCORE_ONLY" = 1 ]; then
    [ -e "$WORK/$MARK" ] || { echo "mutation: no run in $WORK" >&2; exit 2; }
    cd "$WORK"
else
    copy_working_tree
    cd "$WORK"
    echo "mutation: mutmut $pinned in $WORK, $JOBS at a time; logs: $WORK/mutmut-<module>.log"
    for module in "${MODULES[@]}"; do
        run_module "$module"
    done
fi

python - "$ROOT/docs/mutation.md" "${MODULES[@]}" <<'EOF'
"""Mutation score per module from mutmut's results (mutants/**/*.meta); equivalents from docs/mutation.md."""
import configparser
import fnmatch
import glob
import json
import os
import re
import sys

doc, modules = sys.argv[1], sys.argv[2:]
config = configparser.ConfigParser()
config.read('setup.cfg')
try:
    text = open(doc, encoding='utf-8').read()
except FileNotFoundError:
    text = ''


def listed(heading):
    """The mutant names in one section of the doc."""
    section = text.split(f'\n## {heading}\n', 1)[-1].split('\n## ', 1)[0] if f'\n## {heading}\n' in text else ''
    return set(re.findall(r'`(dsmnet_arch\.[^`\s]+__mutmut_\d+)`', section))


equivalent = listed('Equivalent mutants')  # left out of the last score
accounted = equivalent | listed('Killed only on a CUDA machine')  # not listed as undecided
results = {}
for meta in glob.glob('mutants/**/*.py.meta', recursive=True):
    results.update(json.load(open(meta, encoding='utf-8'))['exit_code_by_key'])
seconds = dict(line.split() for line in open('seconds.txt')) if os.path.exists('seconds.txt') else {}
# mutmut's exit codes: 1, 3 a test failed; 24, -24, 152, 255, 36 timeout; -9, -11 killed by a signal
detected = {1, 3, 24, -24, 152, 255, 36, -9, -11}
print(f'\n{"module":<11}{"mutants":>8}{"killed":>8}{"survived":>9}{"no tests":>9}{"score":>8}'
      f'{"equivalent":>11}{"score w/o eq.":>14}{"time":>8}')


def row(label, names, time):
    killed = [n for n in names if results[n] in detected]
    no_tests = [n for n in names if results[n] == 33]
    survived = [n for n in names if n not in killed and n not in no_tests]
    eq = [n for n in survived + no_tests if n in equivalent]
    print(f'{label:<11}{len(names):>8}{len(killed):>8}{len(survived):>9}{len(no_tests):>9}'
          f'{100 * len(killed) / max(len(names), 1):>7.1f}%{len(eq):>11}'
          f'{100 * len(killed) / max(len(names) - len(eq), 1):>13.1f}%{time:>8}')
    return [(n, results[n]) for n in survived + no_tests if n not in accounted]


undecided, everything = [], []
for module in modules:
    patterns = config['mutation'][module].split()
    names = sorted(n for n in results if any(fnmatch.fnmatch(n, p) for p in patterns))
    everything += names
    undecided += row(module, names, f'{seconds[module]}s' if module in seconds else '')
if len(modules) > 1:
    row('all', everything, f'{sum(int(seconds.get(m, 0)) for m in modules)}s')
if undecided:
    print(f'\n{len(undecided)} mutants survived that docs/mutation.md does not account for '
          f'(to see one: cd {os.getcwd()} && mutmut show NAME, with .venv/bin on PATH):')
    for name, code in undecided:
        print(f'  {name}{"  (no test calls it)" if code == 33 else ""}')
EOF
