"""The classroom's check: notebooks run top to bottom on a clean runtime, as a student's fresh Colab would run them.

A wheel of id3pm_nb is built and installed into a new virtual environment with the extras the notebooks' set-up cell
installs on a CPU runtime (`cpu,attrs`; no `dev` extra: no nbdev, no pytest), plus `execnb` to run the cells; the notebooks are copied to a folder outside the checkout and
run there, with no `ID3PM_*` variable but the data location (`ID3PM_LFW`). Cells run as `nbdev_test` runs them (the
flags of `settings.ini`'s `tst_flags` and `#| eval: false` cells are skipped). Any error, a KeyError included, fails.

    python tools/clean_runtime.py                                   # 05a_pipeline and both tutorials
    python tools/clean_runtime.py nbs/03c_sampling.ipynb --keep /tmp/rt   # other notebooks; keep (and reuse) the venv

Packages come at the releases `.ci/constraints.txt` pins (as CI installs them). Exit code 0 when every notebook ran.
"""
import argparse, configparser, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ['nbs/05a_pipeline.ipynb', 'nbs/tutorials/demo.ipynb', 'nbs/tutorials/explore.ipynb']
EXTRAS = 'cpu,attrs'   # what the notebooks' set-up cell (tools/notebook_setup.py) installs on a CPU runtime

# What runs inside the clean environment: one notebook's code cells, in order, in one shell, stopping at the first error.
RUNNER = '''
import sys, time
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
path, flags = sys.argv[1], set(sys.argv[2].split())
def skip(cell) -> bool:
    if cell.cell_type != 'code' or 'nbdev_export(' in cell.source: return True
    directives = [l[2:].strip() for l in cell.source.splitlines() if l.startswith('#|')]
    return any(d.replace(' ', '') == 'eval:false' or d in flags for d in directives)
shell, t0 = CaptureShell(path), time.time()
try: shell.run_all(read_nb(path), exc_stop=True, preproc=skip)
except BaseException:
    print(shell.prettytb(fname=path), file=sys.stderr); sys.exit(1)
print(f"{path}: ran in {time.time() - t0:.0f} s")
'''


def sh(*cmd, **kw):
    "Run a command; on failure, its output's tail and the command."
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode: raise SystemExit(f"{(r.stdout + r.stderr)[-3000:]}\nfailed ({r.returncode}): {' '.join(map(str, cmd))}")
    return r


def clean_venv(where: Path) -> Path:
    "A virtual environment at `where` with the wheel of this checkout and the set-up cell's CPU extras, at the pinned releases; its python."
    py = where/'venv'/'bin'/'python'
    if py.is_file(): return py
    shutil.rmtree(where/'whl', ignore_errors=True)
    sh(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', where/'whl', ROOT)
    wheel = next((where/'whl').glob('id3pm_nb-*.whl'))
    sh(sys.executable, '-m', 'venv', where/'venv')
    pins = ['-c', ROOT/'.ci'/'constraints.txt']
    sh(py, '-m', 'pip', 'install', '-q', *pins, '--upgrade', 'pip')
    sh(py, '-m', 'pip', 'install', '-q', *pins, f'{wheel}[{EXTRAS}]', 'execnb')
    sh(py, '-m', 'pip', 'install', '-q', *pins, '--force-reinstall', '--no-deps', 'opencv-python-headless')   # as .ci/setup
    return py


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', default=DEFAULT, help='notebooks to run (default: 05a_pipeline and both tutorials)')
    p.add_argument('--lfw', default=os.environ.get('ID3PM_LFW'), help='the LFW folder (default $ID3PM_LFW)')
    p.add_argument('--keep', default=None, help='a folder for the venv and the copies, kept (and reused) afterwards')
    p.add_argument('--timeout', type=float, default=900, help='seconds per notebook')
    a = p.parse_args(argv)
    if not a.lfw: raise SystemExit("no LFW: pass --lfw PATH or set ID3PM_LFW (the documented data location)")
    where = Path(a.keep or tempfile.mkdtemp(prefix='id3pm_clean_')).resolve()
    where.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    py = clean_venv(where)
    print(f"clean venv with the wheel ({time.time() - t0:.0f} s): {py}", flush=True)
    work = where/'work'; work.mkdir(exist_ok=True)
    (work/'run_notebook.py').write_text(RUNNER)
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    flags = cfg['DEFAULT'].get('tst_flags', '')
    env = {k: v for k, v in os.environ.items() if not k.startswith('ID3PM_') and k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(ID3PM_LFW=str(Path(a.lfw).resolve()), PATH=f"{py.parent}{os.pathsep}{env.get('PATH', '')}")
    failed = []
    for nb in a.notebooks:
        src = (ROOT/nb).resolve()
        if not src.is_file(): raise SystemExit(f"{nb}: no such notebook")
        dst = work/src.name; shutil.copy(src, dst)
        t1 = time.time()
        try: r = subprocess.run([py, work/'run_notebook.py', dst.name, flags], cwd=work, env=env, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired: failed.append(nb); print(f"{nb}: still running after {a.timeout:g} s", flush=True); continue
        if r.returncode: failed.append(nb); print(f"{nb}: FAILED\n{r.stderr[-4000:]}", flush=True)
        else: print(f"{nb}: ran top to bottom in {time.time() - t1:.0f} s", flush=True)
    if not a.keep: shutil.rmtree(where, ignore_errors=True)
    print(f"{len(a.notebooks) - len(failed)} of {len(a.notebooks)} notebooks ran on the clean runtime ({time.time() - t0:.0f} s in all)")
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main())
