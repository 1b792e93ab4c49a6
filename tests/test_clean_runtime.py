"""The classroom's promise (issue 22): a student's fresh runtime runs the notebooks. A wheel of this checkout goes into a new
virtual environment without the dev extra, and a chapter notebook and both tutorials run top to bottom from a folder
outside the checkout with no `ID3PM_*` variable but the data location (tools/clean_runtime.py; about 4 minutes)."""
import importlib.util, os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('clean_runtime', ROOT/'tools'/'clean_runtime.py')
C = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(C)


def test_notebooks_run_on_a_clean_runtime(tmp_path, capsys):
    lfw = os.environ.get('ID3PM_LFW') or str((ROOT.parent/'shared'/'data'/'lfw').resolve())
    rc = C.main(['--lfw', lfw, '--keep', str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-6000:]
    assert all(f"{nb}: ran top to bottom" in out for nb in C.DEFAULT), out
    assert not list((tmp_path/'venv').glob('lib/python*/site-packages/nbdev')), "the clean runtime must not hold the dev extra"


def test_a_failing_notebook_fails(tmp_path, capsys):
    "A KeyError in a cell fails the check (run by a stand-in python that has execnb: only the runner is tested here)."
    import json
    nb = {'cells': [{'cell_type': 'code', 'id': 'c1', 'metadata': {}, 'outputs': [], 'execution_count': None,
                     'source': "import os\nx = os.environ['ID3PM_NO_SUCH_VARIABLE']"}],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path/'bad.ipynb').write_text(json.dumps(nb))
    (tmp_path/'venv'/'bin').mkdir(parents=True)
    py = tmp_path/'venv'/'bin'/'python'                                    # any python with execnb: the runner is what is tested
    py.write_text(f'#!/bin/sh\nexec {os.sys.executable} "$@"\n'); py.chmod(0o755)
    rc = C.main([str(tmp_path/'bad.ipynb'), '--lfw', str(tmp_path), '--keep', str(tmp_path)])
    assert rc == 1 and "KeyError: 'ID3PM_NO_SUCH_VARIABLE'" in capsys.readouterr().out


def test_the_clean_runtime_installs_what_the_set_up_cell_installs():
    "A student's CPU runtime gets the set-up cell's extras; the check must install the same ones, not fewer."
    spec = importlib.util.spec_from_file_location('notebook_setup', ROOT/'tools'/'notebook_setup.py')
    S = importlib.util.module_from_spec(spec); spec.loader.exec_module(S)
    assert f"else '{C.EXTRAS}'" in S.TEMPLATE, (C.EXTRAS, S.TEMPLATE)
