"""The package's shape, checked: one package per stage (issue 21), notebook order is import order, inference never loads
training code, modules stay small, and public functions take a handful of parameters (issue 12). Static checks plus fresh
interpreters."""
import ast, io, json, re, subprocess, sys, tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / 'id3pm_nb'
MAX_LINES = 450
MAX_COLS = 120
MAX_PARAMS = 10
# The command-line wrappers take one parameter per option: that list *is* the interface `call_parse` turns into a
# parser, so a config object there would only move the options out of sight of `--help`.
MANY_PARAMS_OK = re.compile(r'_cli$')
# A `**kw` counts as a parameter. One function forwards it whole to another whose signature documents every option.
KW_FORWARDS = {'get_sr_learner': 'get_learner'}


def module_order() -> dict[str, int]:
    "dotted module name (`use.pipeline`) -> position of the notebook that exports it, in the order nbdev lists them."
    order = {}
    nbs = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb'))
    for i, nb in enumerate(nbs):
        for cell in json.loads(nb.read_text())['cells']:
            m = re.match(r'#\|\s*default_exp\s+(\S+)', ''.join(cell['source']))
            if cell['cell_type'] == 'code' and m: order[m.group(1)] = i
    return order


def dotted(p: Path) -> str: return '.'.join(p.relative_to(LIB).with_suffix('').parts)


def local_imports(path: Path) -> set[str]:
    "The id3pm_nb modules (dotted, absolute) `path` imports, at any depth of the file (lazy imports count too)."
    out, package = set(), dotted(path).split('.')[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom): continue
        if node.level:
            base = package[:len(package) - (node.level - 1)]
            if node.module: out.add('.'.join(base + node.module.split('.')))
            else: out.update('.'.join(base + [a.name]) for a in node.names)
        elif node.module and node.module.startswith('id3pm_nb.'): out.add(node.module.removeprefix('id3pm_nb.'))
    return out


def modules():
    return sorted(p for p in LIB.rglob('*.py') if p.name not in ('__init__.py', '_modidx.py'))


# The stages, one package each; only the notebook helpers and the shared utilities stay at the top.
PACKAGES = {'fr', 'data', 'model', 'train', 'use', 'eval', 'cli'}
TOP = {'core', 'dist', 'session'}
# What using a trained bundle may load: never the training packages (fastai's Learner comes with them).
USE_SIDE = ('fr.', 'model.', 'use.', 'eval.', 'cli.use')


def test_packages_show_the_stages():
    top = {p.stem for p in LIB.glob('*.py')} - {'__init__', '_modidx'}
    assert top == TOP, f"modules at the top of the package other than {sorted(TOP)}: {sorted(top - TOP)} (put them in a stage package)"
    pkgs = {p.parent.name for p in LIB.glob('*/__init__.py')}
    assert pkgs == PACKAGES, (pkgs, PACKAGES)
    for pkg in pkgs:
        doc = ast.get_docstring(ast.parse((LIB/pkg/'__init__.py').read_text()))
        assert doc, f"id3pm_nb/{pkg}/__init__.py: say in one docstring what the stage holds"


def test_notebook_numbers_are_unique():
    stems = [p.stem.split('_')[0] for p in (ROOT / 'nbs').glob('*.ipynb') if p.stem != 'index']
    twice = sorted({s for s in stems if stems.count(s) > 1})
    assert not twice, f"notebook numbers used twice: {twice}"


def test_every_module_has_a_notebook():
    order = module_order()
    orphans = [dotted(p) for p in modules() if dotted(p) not in order]
    assert not orphans, f"modules without a notebook (stale files? delete them): {orphans}"


def test_no_module_imports_a_later_one():
    order = module_order()
    bad = [f"{dotted(p)} (notebook #{order[dotted(p)]}) imports {m} (#{order[m]})"
           for p in modules() for m in sorted(local_imports(p)) if m in order and m != dotted(p) and order[m] >= order[dotted(p)]]
    assert not bad, 'imports against the notebook order:\n' + '\n'.join(bad)


def test_use_side_imports_no_training_package():
    "Statically: fr, model, use, eval and the use commands import nothing from `train` or the training commands."
    bad = [f"{dotted(p)} imports {m}" for p in modules() if dotted(p).startswith(USE_SIDE)
           for m in sorted(local_imports(p)) if m.startswith(('train.', 'cli.train', 'cli.demo'))]
    assert not bad, 'use-side modules importing training code:\n' + '\n'.join(bad)


@pytest.mark.parametrize('mod', ['cli.use', 'use.pipeline', 'use.explorer', 'eval.evaluate', 'eval.report', 'eval.evalset',
                                 'model.superres', 'model.bundle'])
def test_inference_imports_no_training_code(mod):
    code = (f"import sys, id3pm_nb.{mod}; "
            "bad = [m for m in sys.modules if m.startswith(('id3pm_nb.train.', 'id3pm_nb.cli.train', 'id3pm_nb.cli.demo'))"
            " or m == 'fastai.learner']; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"importing id3pm_nb.{mod} loads training code: {r.stdout.strip()} {r.stderr[-2000:]}"


def test_lines_read():
    "No library line over 120 characters and one statement per line (no `;` chains): exported code reads top to bottom."
    long, chains = [], []
    for p in LIB.rglob('*.py'):
        if p.name == '_modidx.py': continue
        text = p.read_text()
        # nbdev writes the `__all__` line itself, wrapping the names at 120 without counting `__all__ = `
        long += [f"{p.relative_to(ROOT)}:{i} ({len(l)} chars)" for i, l in enumerate(text.splitlines(), 1)
                 if len(l) > MAX_COLS and not l.startswith('__all__ = [')]
        toks = tokenize.generate_tokens(io.StringIO(text).readline)
        chains += [f"{p.relative_to(ROOT)}:{t.start[0]}" for t in toks if t.type == tokenize.OP and t.string == ';']
    assert not long, f"{len(long)} library lines over {MAX_COLS} characters (wrap them in the notebooks): {long[:20]}"
    assert not chains, f"{len(chains)} ';'-chained statements (one statement per line): {chains[:20]}"


def test_modules_stay_small():
    "Every module under 450 lines as a reader meets them: physical lines, blank ones and comments included."
    big = {dotted(p): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
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
            if len(names) > MAX_PARAMS and not MANY_PARAMS_OK.search(node.name): bad.append(f"{dotted(p)}.{node.name} ({len(names)})")
    assert not bad, f"public functions with more than {MAX_PARAMS} parameters (pass a spec/config object or callbacks): {bad}"


# The path of a sampling option, from the command line to the sampler: every step takes a `SamplingSpec` and explicit
# run options, never `**kw` to be picked apart further down (issue 21: one way to sample).
SAMPLING_PATH = {'model/sampling': ['sample'], 'model/superres': ['upsample'], 'use/pipeline': ['sample', 'invert', 'upsample',
                 'generator', '_images', '_sample_base', '_search'], 'cli/use': ['sample_cli', 'eval_cli', 'cli_spec']}


def test_sampling_path_has_no_kw_funnels():
    funnels, missing = [], []
    for mod, names in SAMPLING_PATH.items():
        defs = {n.name: n for n in ast.walk(ast.parse((LIB/f'{mod}.py').read_text())) if isinstance(n, ast.FunctionDef)}
        missing += [f'{mod}.{n}' for n in names if n not in defs]
        funnels += [f'{mod}.{n}(**{defs[n].args.kwarg.arg})' for n in names if n in defs and defs[n].args.kwarg]
    assert not missing, f"functions of the sampling path not found (renamed? update SAMPLING_PATH): {missing}"
    assert not funnels, f"the sampling path takes **kw: pass a SamplingSpec and explicit keywords instead: {funnels}"
