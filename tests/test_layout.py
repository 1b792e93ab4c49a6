"""The package's shape, checked: notebook order is import order, inference never loads training code, modules stay
small, and public functions take a handful of parameters (issue 12). Static checks plus two fresh interpreters."""
import ast, json, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / 'id3pm_nb'
MAX_LINES = 450
MAX_PARAMS = 10
# The command-line wrappers take one parameter per option: that list *is* the interface `call_parse` turns into a
# parser, so a config object there would only move the options out of sight of `--help`.
MANY_PARAMS_OK = re.compile(r'_cli$')
# A `**kw` counts as a parameter. One function forwards it whole to another whose signature documents every option.
KW_FORWARDS = {'get_sr_learner': 'get_learner'}


def module_order() -> dict[str, int]:
    "module name -> position of the notebook that exports it, in the order nbdev lists the notebooks."
    order = {}
    nbs = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb'))
    for i, nb in enumerate(nbs):
        for cell in json.loads(nb.read_text())['cells']:
            m = re.match(r'#\|\s*default_exp\s+(\S+)', ''.join(cell['source']))
            if cell['cell_type'] == 'code' and m: order[m.group(1)] = i
    return order


def local_imports(path: Path) -> set[str]:
    "The id3pm_nb modules `path` imports, at any depth of the file (lazy imports count too)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: out.add(node.module.split('.')[0])
            elif node.level == 1: out.update(a.name for a in node.names)
            elif node.module and node.module.startswith('id3pm_nb.'): out.add(node.module.split('.')[1])
    return out


def modules():
    return sorted(p for p in LIB.glob('*.py') if p.name not in ('__init__.py', '_modidx.py'))


def test_every_module_has_a_notebook():
    order = module_order()
    orphans = [p.stem for p in modules() if p.stem not in order]
    assert not orphans, f"modules without a notebook (stale files? delete them): {orphans}"


def test_no_module_imports_a_later_one():
    order = module_order()
    bad = [f"{p.stem} (notebook #{order[p.stem]}) imports {m} (#{order[m]})"
           for p in modules() for m in sorted(local_imports(p)) if m in order and m != p.stem and order[m] >= order[p.stem]]
    assert not bad, 'imports against the notebook order:\n' + '\n'.join(bad)


@pytest.mark.parametrize('mod', ['pipeline', 'evaluate', 'explorer', 'superres', 'bundle', 'use_cli', 'report', 'evalset'])
def test_inference_imports_no_training_code(mod):
    code = (f"import sys, id3pm_nb.{mod}; "
            "bad = [m for m in ('id3pm_nb.train', 'id3pm_nb.train_sr', 'id3pm_nb.checkpoint', 'fastai.learner') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"importing id3pm_nb.{mod} loads training code: {r.stdout.strip()} {r.stderr[-2000:]}"


def test_modules_stay_small():
    big = {p.stem: n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them along a concern): {big}"


def test_public_functions_take_few_parameters():
    bad = []
    for p in modules():
        tree = ast.parse(p.read_text())
        # methods added as `ID3PM.sample = _sample` (or `A.x, A.y = _x, _y`) are public under their attribute's name
        patched = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    pairs = zip(t.elts, node.value.elts) if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple) else [(t, node.value)]
                    patched |= {v.id for k, v in pairs if isinstance(k, ast.Attribute) and not k.attr.startswith('_') and isinstance(v, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            if node.name.startswith('_') and node.name not in patched and not any(
                    isinstance(d, ast.Name) and d.id == 'patch' for d in node.decorator_list): continue
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ('self', 'cls')]
            if a.kwarg and node.name not in KW_FORWARDS: names.append(f'**{a.kwarg.arg}')   # an open-ended parameter
            if len(names) > MAX_PARAMS and not MANY_PARAMS_OK.search(node.name): bad.append(f"{p.stem}.{node.name} ({len(names)})")
    assert not bad, f"public functions with more than {MAX_PARAMS} parameters (pass a spec/config object or callbacks): {bad}"


# The path of a sampling option, from the command line to the sampler: every step takes a `SamplingSpec` and explicit
# run options, never `**kw` to be picked apart further down (issue 21: one way to sample).
SAMPLING_PATH = {'sampling': ['sample'], 'superres': ['upsample'], 'pipeline': ['sample', 'invert', 'upsample', 'generator',
                 '_images', '_sample_base', '_search'], 'use_cli': ['sample_cli', 'eval_cli', 'cli_spec']}


def test_sampling_path_has_no_kw_funnels():
    funnels, missing = [], []
    for mod, names in SAMPLING_PATH.items():
        defs = {n.name: n for n in ast.walk(ast.parse((LIB/f'{mod}.py').read_text())) if isinstance(n, ast.FunctionDef)}
        missing += [f'{mod}.{n}' for n in names if n not in defs]
        funnels += [f'{mod}.{n}(**{defs[n].args.kwarg.arg})' for n in names if n in defs and defs[n].args.kwarg]
    assert not missing, f"functions of the sampling path not found (renamed? update SAMPLING_PATH): {missing}"
    assert not funnels, f"the sampling path takes **kw: pass a SamplingSpec and explicit keywords instead: {funnels}"
