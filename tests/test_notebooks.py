"""The committed notebooks show true small outputs, and the renderer that makes them (tools/render_notebooks.py) works:
fingerprints that follow code only, small cleaned outputs, lock-safe merges, the check that names what to fix.
These tests never run notebooks (CI runs every cell through nbdev_test); they read the committed files."""
import ast, importlib.util, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('render_notebooks', ROOT/'tools'/'render_notebooks.py')
R = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(R)

NOTEBOOKS = R.chapter_notebooks()


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.relative_to(ROOT/'nbs').as_posix())
def test_notebook_shows_true_small_outputs(path):
    "Rendered from a trained bundle, for the code it holds now, under 300 KB, with a picture or table, no error kept."
    assert R.problems(path) == []


def test_chapters_found():
    names = {p.relative_to(ROOT/'nbs').as_posix() for p in NOTEBOOKS}
    assert {'00_core.ipynb', '03c_sampling.ipynb', 'tutorials/demo.ipynb'} <= names, names
    assert 'index.ipynb' not in names


def test_problems_name_what_to_fix(tmp_path):
    "`render_notebooks.py --check` finds a notebook without outputs, one rendered without a bundle, one whose code changed after its render, one that is fine."
    nb = {'cells': [{'cell_type': 'code', 'source': ['x = 1'], 'metadata': {}, 'outputs': [
        {'output_type': 'display_data', 'data': {'text/html': ['<table></table>']}, 'metadata': {}}]}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    p = tmp_path/'a.ipynb'
    p.write_text(json.dumps(nb)); assert any('has no rendered outputs' in m for m in R.problems(p))
    nb['metadata'][R.META_KEY] = {'code': R.code_fingerprint(nb), 'bundle': None}; p.write_text(json.dumps(nb))
    assert any('without a trained bundle' in m for m in R.problems(p))
    nb['metadata'][R.META_KEY]['bundle'] = 'bundle@0123456789ab'; p.write_text(json.dumps(nb))
    assert R.problems(p) == []
    nb['cells'][0]['source'] = ['x = 2']; p.write_text(json.dumps(nb))
    assert any('its code changed since' in m for m in R.problems(p))


def test_fingerprint_follows_code_only():
    nb = {'cells': [{'cell_type': 'markdown', 'source': ['# t']}, {'cell_type': 'code', 'source': ['x = 1\n', 'x'], 'outputs': []}]}
    fp = R.code_fingerprint(nb)
    nb['cells'][0]['source'] = ['# another title']; nb['cells'][1]['outputs'] = [{'output_type': 'stream', 'text': ['1']}]
    assert R.code_fingerprint(nb) == fp                                  # prose and outputs do not count
    nb['cells'][1]['source'] = 'x = 2\nx'
    assert R.code_fingerprint(nb) != fp


def test_clean_text_drops_progress_bars_and_cuts():
    bar = '█\r\r |----| 0.00% [0/5 00:00<?]\r |████| 100.00% [5/5 00:00<00:00]done\n'
    assert R.clean_text(bar + 'epoch 1\n') == 'done\nepoch 1\n'
    assert R.clean_text('a\n' + ' ' * 60 + '\n\nb\n') == 'a\n\nb\n'                   # a bar erased with spaces goes, blank lines stay
    long = R.clean_text('\n'.join(map(str, range(1000))))
    assert 'lines cut by render_notebooks' in long and long.startswith('0\n1\n') and long.endswith('999')


def test_big_pictures_become_thumbnails():
    import base64, io
    import numpy as np
    from PIL import Image
    buf = io.BytesIO(); Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)).save(buf, 'PNG')
    mime, b64 = R.shrink_image(base64.b64encode(buf.getvalue()).decode())
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert max(im.size) == R.IMG_MAX_PX and mime in ('image/png', 'image/jpeg') and len(b64) < len(buf.getvalue())


def test_outputs_go_only_into_the_code_that_ran(tmp_path):
    nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': ['# t']},
                    {'cell_type': 'code', 'metadata': {}, 'source': ['1 + 1'], 'outputs': [], 'execution_count': None}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    path = tmp_path/'t.ipynb'; path.write_text(json.dumps(nb))
    out = [{'output_type': 'execute_result', 'data': {'text/plain': ['2']}, 'metadata': {}, 'execution_count': 1}]
    assert not R.merge(path, [('1 + 2', out)], None, set(), None)           # someone changed the cell meanwhile
    assert json.loads(path.read_text()) == nb
    assert R.merge(path, [('1 + 1', out)], None, set(), None)
    got = json.loads(path.read_text())
    assert got['cells'][1]['outputs'][0]['data']['text/plain'] == ['2'] and got['cells'][0]['source'] == ['# t']
    assert got['metadata'][R.META_KEY]['code'] == R.code_fingerprint(got) and got['metadata'][R.META_KEY]['bundle'] is None


def test_index_is_the_readme():
    "`nbdev_readme` renders `readme_nb` into README.md: that notebook must be the README's own copy (tools/readme_index.py)."
    _s = importlib.util.spec_from_file_location('readme_index', ROOT/'tools'/'readme_index.py')
    T = importlib.util.module_from_spec(_s); _s.loader.exec_module(T)
    assert 'readme_nb = index.ipynb' in (ROOT/'settings.ini').read_text()
    assert T.main(['--check']) == 0, 'nbs/index.ipynb is not README.md: run python tools/readme_index.py'
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    assert all(c['cell_type'] == 'markdown' for c in nb['cells'])          # nothing that nbdev_readme would execute or add
    assert ''.join(''.join(c['source']) + '\n' for c in nb['cells']).split() == (ROOT/'README.md').read_text().split()


def test_no_environment_lookup_that_can_raise():
    "A notebook reads settings with `os.environ.get` or helpers such as `find_lfw()`: `os.environ[...]` stops a fresh runtime with a KeyError."
    import re
    bad = []
    for p in sorted((ROOT/'nbs').rglob('*.ipynb')):
        for c in json.loads(p.read_text())['cells']:
            if c['cell_type'] != 'code': continue
            for line in ''.join(c['source']).splitlines():
                for m in re.finditer(r"os\.environ\[[^\]]+\]", line):
                    if re.match(r"\s*=(?!=)", line[m.end():]) or line[:m.start()].rstrip().endswith('del'): continue   # set or deleted
                    bad.append(f"{p.relative_to(ROOT)}: {line.strip()}")
    assert not bad, bad


def test_every_notebook_starts_with_the_set_up_cell():
    "One first cell everywhere (tools/notebook_setup.py): install on a fresh runtime, then device, LFW and bundle."
    _s = importlib.util.spec_from_file_location('notebook_setup', ROOT/'tools'/'notebook_setup.py')
    T = importlib.util.module_from_spec(_s); _s.loader.exec_module(T)
    assert T.main(['--check']) == 0, 'a notebook lacks the set-up cell or has an old one: run python tools/notebook_setup.py'
    assert len(NOTEBOOKS) > 30 and all(T.setup_cell(json.loads(p.read_text())) for p in NOTEBOOKS)


# ---- teach first (issue 22): after each exported definition, an example whose output shows ------------------------
def _directives(src: str) -> list[str]: return [l[2:].strip().replace(' ', '') for l in src.splitlines() if l.startswith('#|')]
def _exported(c) -> bool:
    return c['cell_type'] == 'code' and any(d.startswith(('export', 'exports')) for d in _directives(R.cell_source(c)))
def _hidden(c) -> bool: return any(d in ('hide', 'eval:false') or d.startswith('exporti') for d in _directives(R.cell_source(c)))


def _public_defs(src: str) -> list[str]:
    try: tree = ast.parse(src)
    except SyntaxError: return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not n.name.startswith('_')]


def examples_shown(nb: dict) -> tuple[list[str], list[str]]:
    "Exported public definitions followed (before the next one) by a visible cell with an output, and those that are not."
    cells, shown, missing = nb['cells'], [], []
    for i, c in enumerate(cells):
        names = _public_defs(R.cell_source(c)) if _exported(c) else []
        if not names: continue
        ok = False
        for d in cells[i + 1:]:
            if _exported(d) and _public_defs(R.cell_source(d)): break
            if d['cell_type'] == 'code' and not _exported(d) and not _hidden(d) and d.get('outputs'): ok = True; break
        (shown if ok else missing).append(names[0])
    return shown, missing


CHAPTERS = [p for p in NOTEBOOKS if p.parent == ROOT/'nbs']


@pytest.mark.parametrize('path', CHAPTERS, ids=lambda p: p.name)
def test_chapters_teach_by_showing(path):
    "Most exported definitions are followed by a visible example with an output; error-path checks sit in hidden cells."
    nb = json.loads(path.read_text())
    shown, missing = examples_shown(nb)
    assert len(shown) >= len(missing), f"{path.name}: {len(missing)} of {len(shown) + len(missing)} exported definitions have no visible example with an output: {missing}"
    visible_checks = []
    for c in nb['cells']:
        if c['cell_type'] != 'code' or _hidden(c) or _exported(c) or 'test_fail' not in R.cell_source(c): continue
        try: body = ast.parse('\n'.join(l for l in R.cell_source(c).splitlines() if not l.startswith(('%', '!')))).body
        except SyntaxError: continue
        if any(isinstance(n, ast.Expr) and getattr(getattr(n.value, 'func', None), 'id', '') == 'test_fail' for n in body):
            visible_checks.append(R.cell_source(c).splitlines()[0][:80])
    assert not visible_checks, f"{path.name}: error-path checks (test_fail) in visible cells; give them a `#| hide` cell: {visible_checks}"
