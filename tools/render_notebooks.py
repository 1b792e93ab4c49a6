#!/usr/bin/env python3
"""Run the chapter notebooks top to bottom on a trained bundle and save their outputs (small) in the notebooks.

    .venv/bin/python tools/render_notebooks.py                 # every chapter, bundle from $ID3PM_BUNDLE or id3pm_demo/bundle
    .venv/bin/python tools/render_notebooks.py nbs/03c_sampling.ipynb --bundle runs/a/bundle
    .venv/bin/python tools/render_notebooks.py --stale --jobs 2 # only notebooks whose code changed since their outputs were made

Each notebook runs in a fresh process with nbdev's own cell runner (execnb), skipping the cells `nbdev_test` skips
(`#| eval: false`, cells with a `tst_flags` flag not given with --flags, the `nbdev_export()` cell), with
`ID3PM_BUNDLE` pointing at the bundle and RENDER_ENV's variables (the training tutorial trains at the demo's budget,
alone, first). Outputs are kept small: pictures shrunk to thumbnails (PNG, or JPEG where that is much smaller),
widgets and progress bars dropped, long text cut (marked). The notebook is then written atomically, holding `--lock
FILE` (an fcntl lock shared with other notebook editors) while it re-reads the file: outputs go in only if the code
cells are still the ones that ran, so a concurrent edit is never lost and never gets outputs that did not come from
it. The fingerprint of the code that made the outputs is stored in the notebook's metadata (`id3pm_render`, kept by
nbdev_clean: settings.ini `allowed_metadata_keys`); tests/test_notebooks.py checks it. Fails, naming the notebook, if
any ends up at 300 KB or more or shows no picture or table.
"""
from __future__ import annotations
import argparse, base64, contextlib, fcntl, hashlib, io, json, os, re, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
META_KEY = 'id3pm_render'
MAX_BYTES = 300_000           # a notebook, outputs included
COMMAND = '.venv/bin/python tools/render_notebooks.py'
DEFAULT_BUNDLE = 'id3pm_demo/bundle'
VISUAL = {'image/png', 'image/jpeg', 'text/html'}
IMG_MAX_PX = 720              # longest side of a saved PNG
IMG_SMALL_BYTES = 8_000       # a PNG larger than this is re-encoded (256-colour palette when that is smaller)
TEXT_MAX_LINES, TEXT_MAX_CHARS = 40, 4000
# What a notebook is rendered with, beside ID3PM_BUNDLE. The training tutorial trains its own model: at the demo's CPU
# budget here (all of LFW, 10 min, a 5-minute SR stage, both cores), where the test suite gives it 0.3 min on 120 photos.
RENDER_ENV = {'tutorials/demo.ipynb': {'ID3PM_MINUTES': '10', 'ID3PM_IMAGES': '0', 'ID3PM_SR_MINUTES': '5', 'OMP_NUM_THREADS': '2'}}


# ---- what the test checks too --------------------------------------------------------------------------------------
def chapter_notebooks(nbs: Path = NBS) -> list[Path]:
    "The notebooks that teach: every notebook under nbs/ (no `_`/`.` folders or files) except index.ipynb (the README)."
    out = []
    for p in sorted(nbs.rglob('*.ipynb')):
        parts = p.relative_to(nbs).parts
        if any(part.startswith(('_', '.')) for part in parts) or parts == ('index.ipynb',): continue
        out.append(p)
    return out


def rel(p: Path) -> str: return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def render_env(p: Path) -> dict: return RENDER_ENV.get(p.relative_to(NBS).as_posix(), {}) if p.is_relative_to(NBS) else {}


def cell_source(cell) -> str: return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def code_fingerprint(nb: dict) -> str:
    "Hash of the notebook's code cells, in order: outputs are true for the code only while this matches."
    h = hashlib.sha256()
    for c in nb['cells']:
        if c['cell_type'] == 'code': h.update(cell_source(c).encode() + b'\0')
    return h.hexdigest()[:16]


def visual_outputs(nb: dict) -> int:
    "How many outputs are a picture (image/png, image/jpeg) or a table (text/html)."
    return sum(1 for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])
               if VISUAL & set(o.get('data', {})))


# ---- shrinking outputs ---------------------------------------------------------------------------------------------
_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
_PROGRESS = re.compile(r'\s*(\|[█\-]*\|\s*)?\d+(\.\d+)?%\s*\[\d+/\d+[^\]]*\]|^\s*█+\s*$|^\s*\|[█\-]+\|\s*$')


def clean_text(text: str) -> str:
    "Terminal text as a reader would have seen it: carriage returns applied, colours and progress bars dropped, cut if long."
    lines = []
    for line in _ANSI.sub('', text).split('\n'):
        last = line.rstrip('\r').rsplit('\r', 1)[-1]          # fastprogress redraws its bar after \r
        kept = _PROGRESS.sub('', last)
        if kept.strip() or last == '': lines.append(kept)     # blank lines stay; a bar erased with spaces goes
    text = '\n'.join(lines)
    ls = text.split('\n')
    if len(ls) > TEXT_MAX_LINES:
        text = '\n'.join(ls[:TEXT_MAX_LINES // 2] + [f'… ({len(ls) - TEXT_MAX_LINES} lines cut by render_notebooks) …']
                         + ls[-TEXT_MAX_LINES // 2:])
    if len(text) > TEXT_MAX_CHARS:
        text = text[:TEXT_MAX_CHARS // 2] + f'\n… ({len(text) - TEXT_MAX_CHARS} characters cut by render_notebooks) …\n' + text[-TEXT_MAX_CHARS // 2:]
    return text


def shrink_image(b64: str) -> tuple[str, str]:
    "(mime type, base64) of the PNG at most IMG_MAX_PX on its longest side, in the smallest of PNG, 256-colour PNG, JPEG."
    from PIL import Image
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw)); im.load()
    if len(raw) <= IMG_SMALL_BYTES and max(im.size) <= IMG_MAX_PX: return 'image/png', b64
    fits = max(im.size) <= IMG_MAX_PX
    im = im.convert('RGB')
    if not fits:
        k = IMG_MAX_PX / max(im.size)
        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.LANCZOS)
    best = ('image/png', raw) if fits else None
    for mime, img, kw in (('image/png', im, dict(optimize=True)),
                          ('image/png', im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE), dict(optimize=True)),
                          ('image/jpeg', im, dict(quality=80, optimize=True))):
        buf = io.BytesIO(); img.save(buf, mime.split('/')[1].upper(), **kw)
        # JPEG only where it saves a lot (noise, photos), so that plots and line art stay crisp PNGs
        if best is None or buf.tell() < len(best[1]) * (0.8 if mime == 'image/jpeg' else 1): best = (mime, buf.getvalue())
    return best[0], base64.b64encode(best[1]).decode()


def _lines(s: str) -> list[str]: return s.splitlines(True)


def shrink_outputs(outputs: list) -> list:
    "Outputs fit to commit: no widgets (nothing renders them from a file), thumbnails, short text."
    out = []
    for o in outputs:
        o = dict(o)
        if o['output_type'] == 'stream':
            text = clean_text(''.join(o['text']))
            if not text.strip(): continue
            o['text'] = _lines(text)
        elif o['output_type'] in ('display_data', 'execute_result'):
            if any(k.startswith('application/vnd.jupyter.widget') for k in o.get('data', {})): continue   # only its repr would be left
            data = dict(o.get('data', {}))
            if 'image/png' in data:
                mime, b64 = shrink_image(''.join(data.pop('image/png')).strip())
                data[mime] = b64
            if 'text/plain' in data: data['text/plain'] = _lines(clean_text(''.join(data['text/plain'])))
            if not data: continue
            o['data'] = data; o['metadata'] = {}
        out.append(o)
    # a figure both returned and flushed by the inline backend shows twice: keep the first copy
    seen, uniq = set(), []
    for o in out:
        key = ''.join(o.get('data', {}).get('image/png', '') or o.get('data', {}).get('image/jpeg', '')) or None
        if key and key in seen: continue
        if key: seen.add(key)
        uniq.append(o)
    return uniq


# ---- running one notebook (in its own process) ---------------------------------------------------------------------
def _skip(cell, flags: set) -> bool:
    "The cells nbdev_test does not run."
    from fastcore.basics import AttrDict
    from nbdev.process import extract_directives
    if cell['cell_type'] != 'code': return True
    s = cell_source(cell)
    if 'nbdev_export' + '(' in s: return True
    d = extract_directives(AttrDict(source=s), remove=False)
    if d.get('eval:', [''])[0].lower() == 'false': return True
    return bool(flags & set(d))                          # `flags`: the tst_flags not asked for (skipped, as by nbdev_test)


def execute(path: Path, flags: set) -> list[tuple[str, list | None]]:
    "Run `path`'s code cells in a fresh shell; (source, outputs or None when skipped) per code cell."
    from execnb.shell import CaptureShell
    from nbdev.config import get_config
    skip = set(get_config(path=ROOT).tst_flags.split()) - flags
    os.chdir(path.parent)
    sys.path.insert(0, str(ROOT))
    nb = json.loads(path.read_text())
    shell = CaptureShell(path, mpl_format='png')
    shell.run("import matplotlib; matplotlib.rcParams['figure.dpi'] = 72\n"
              "import id3pm_nb")   # its warning filter (torch's deprecation of what fastai calls at import) before any fastai import
    res = []
    for i, cell in enumerate(nb['cells']):
        if cell['cell_type'] != 'code': continue
        src = cell_source(cell)
        if _skip(cell, skip): res.append((src, None)); continue
        t0 = time.time()
        shell._cell_idx = i + 1          # what execnb's traceback names
        outs = shell.run(src)
        if shell.exc is not None:
            raise SystemExit(f'{rel(path)}: cell {i} failed ({type(shell.exc).__name__}: {shell.exc})\n'
                             + shell.prettytb(fname=path))
        if time.time() - t0 > 10: print(f'  cell {i}: {time.time() - t0:.0f}s', file=sys.stderr, flush=True)
        res.append((src, json.loads(json.dumps(list(outs), default=str))))
    return res


@contextlib.contextmanager
def held(lock: Path | None):
    if lock is None: yield; return
    with open(lock, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try: yield
        finally: fcntl.flock(f, fcntl.LOCK_UN)


def write_nb(path: Path, nb: dict):
    "nbdev's layout (indent 1, trailing newline), written to a temporary file and renamed over the notebook."
    txt = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n'
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.name)
    with os.fdopen(fd, 'w') as f: f.write(txt)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def bundle_id(bundle: Path | None) -> str | None:
    if bundle is None: return None
    return bundle.name + '@' + hashlib.sha256((bundle/'bundle.json').read_bytes()).hexdigest()[:12]


def merge(path: Path, ran: list, bundle: Path | None, flags: set, lock: Path | None) -> bool:
    "Put the outputs into the notebook as it is now, if its code is still what ran; False if it changed meanwhile."
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    with held(lock):
        nb = json.loads(path.read_text())
        code = [c for c in nb['cells'] if c['cell_type'] == 'code']
        if [cell_source(c) for c in code] != [s for s, _ in ran]: return False
        for c, (_, outs) in zip(code, ran):
            c['outputs'] = shrink_outputs(outs or [])
            c['execution_count'] = None
        nb['metadata'][META_KEY] = {'code': code_fingerprint(nb), 'bundle': bundle_id(bundle), 'flags': sorted(flags),
                                    'command': COMMAND, **({'env': env} if (env := render_env(path)) else {})}
        clean_nb(nb, clear_all=False, allowed_metadata_keys=cfg.get('allowed_metadata_keys', '').split() + [META_KEY],
                 allowed_cell_metadata_keys=cfg.get('allowed_cell_metadata_keys', '').split(), clean_ids=cfg.clean_ids)
        write_nb(path, nb)
    return True


def render_one(path: Path, bundle: Path | None, flags: set, lock: Path | None, tries: int = 2):
    for _ in range(tries):
        ran = execute(path, flags)
        if merge(path, ran, bundle, flags, lock): return
        print(f'{rel(path)} changed while it ran: running it again', file=sys.stderr)
    raise SystemExit(f'{rel(path)} kept changing while it ran: rerun {COMMAND} {rel(path)} when edits stop')


# ---- the command ---------------------------------------------------------------------------------------------------
def find_bundle(arg: str | None, no_bundle: bool) -> Path | None:
    if no_bundle: return None
    b = Path(arg or os.environ.get('ID3PM_BUNDLE') or ROOT/DEFAULT_BUNDLE).resolve()
    if not (b/'bundle.json').is_file():
        raise SystemExit(f'no trained bundle at {b} (no bundle.json). Make the demo\'s one first, about 10 minutes on a CPU:\n'
                         f'  ID3PM_LFW=/path/to/lfw .venv/bin/id3pm_demo          # writes id3pm_demo/bundle\n'
                         f'or pass --bundle FOLDER (or set ID3PM_BUNDLE); --no-bundle renders the small CI fallbacks instead.')
    return b


def problems(path: Path) -> list[str]:
    "What keeps notebook `path` from showing true small outputs: size, no render or none from a bundle, code changed since, nothing visual, errors."
    fix = f'run `{COMMAND} {rel(path)}` (it needs a trained bundle: see README)'
    size, nb = path.stat().st_size, json.loads(path.read_text())
    out, meta = [], nb['metadata'].get(META_KEY)
    if size >= MAX_BYTES: out.append(f'{path.name} is {size / 1000:.0f} KB, over {MAX_BYTES // 1000} KB: show fewer or smaller pictures, then {fix}')
    if not meta: return out + [f'{path.name} has no rendered outputs: {fix}']
    if not meta.get('bundle'): out.append(f'{path.name} was rendered without a trained bundle (--no-bundle: the CI fallbacks): {fix}')
    if meta['code'] != code_fingerprint(nb):
        out.append(f"{path.name}: its code changed since its outputs were rendered (fingerprint {meta['code']}, code now "
                   f"{code_fingerprint(nb)}), so the outputs may not be true any more: {fix}")
    if not visual_outputs(nb): out.append(f'{path.name} shows no picture (image/png, image/jpeg) or table (text/html): add a cell that does, then {fix}')
    errors = [i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code' for o in c.get('outputs', []) if o['output_type'] == 'error']
    if errors: out.append(f'{path.name}: cells {errors} keep an error output: {fix}')
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='*', help='notebooks to render (default: every chapter notebook)')
    ap.add_argument('--bundle', help=f'trained bundle folder (default: $ID3PM_BUNDLE, else {DEFAULT_BUNDLE})')
    ap.add_argument('--no-bundle', action='store_true', help='render without a bundle (the small fallbacks CI runs)')
    ap.add_argument('--stale', action='store_true', help='only notebooks whose code differs from their rendered fingerprint')
    ap.add_argument('--flags', default='', help='space-separated tst_flags whose cells run too (as nbdev_test --flags)')
    ap.add_argument('--lock', help='fcntl lock file shared with other tools that edit the notebooks at the same time')
    ap.add_argument('--jobs', type=int, default=1, help='notebooks rendered at the same time (each on one thread)')
    ap.add_argument('--check', action='store_true', help='render nothing: list the notebooks whose outputs are missing, stale, too big or not visual (exit 1 if any)')
    ap.add_argument('--one', action='store_true', help=argparse.SUPPRESS)   # worker: render exactly one notebook here
    a = ap.parse_args(argv)
    flags, lock = set(a.flags.split()), Path(a.lock) if a.lock else None
    if a.check:
        found = [m for p in ([Path(p).resolve() for p in a.notebooks] or chapter_notebooks()) for m in problems(p)]
        print('\n'.join(found) or 'every notebook shows true small outputs')
        raise SystemExit(1 if found else 0)
    bundle = find_bundle(a.bundle, a.no_bundle)
    if a.one:
        if bundle: os.environ['ID3PM_BUNDLE'] = str(bundle)
        else: os.environ.pop('ID3PM_BUNDLE', None)
        return render_one(Path(a.notebooks[0]).resolve(), bundle, flags, lock)
    nbs = [Path(p).resolve() for p in a.notebooks] or chapter_notebooks()
    if a.stale: nbs = [p for p in nbs if json.loads(p.read_text())['metadata'].get(META_KEY, {}).get('code')
                       != code_fingerprint(json.loads(p.read_text()))]
    alone = [p for p in nbs if render_env(p)]            # those with their own budgets (training) run first, one at a time,
    rest = [p for p in nbs if not render_env(p)]         # so that no other notebook shares their cores and time
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'MPLBACKEND': 'Agg',
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep)}
    worker = [sys.executable, __file__, '--one', '--flags', a.flags] + (['--bundle', str(bundle)] if bundle else ['--no-bundle']) \
             + (['--lock', str(lock)] if lock else [])

    def run(p: Path, jobs: int):
        t0 = time.time()
        if jobs == 1: print(f'== {rel(p)}', flush=True)
        r = subprocess.run(worker + [str(p)], env={**env, **render_env(p)}, capture_output=jobs > 1, text=True)
        return p, r, time.time() - t0, jobs

    failed, sizes = [], {}
    def results(pool):                                   # lazily: the pool starts once the ones that run alone are done
        for p in alone: yield run(p, 1)
        yield from pool.map(lambda p: run(p, a.jobs), rest)

    with ThreadPoolExecutor(a.jobs) as pool:
        for p, r, secs, jobs in results(pool):
            name = rel(p)
            if jobs > 1: print(f'== {name}\n' + (r.stdout + r.stderr).rstrip(), flush=True)
            if r.returncode: failed.append(f'{name}: failed (see above)'); continue
            sizes[name] = p.stat().st_size
            nb = json.loads(p.read_text())
            print(f'   {sizes[name] / 1000:.0f} KB, {visual_outputs(nb)} pictures/tables, {secs:.0f}s', flush=True)
            if sizes[name] >= MAX_BYTES: failed.append(f'{name}: {sizes[name] / 1000:.0f} KB, over the {MAX_BYTES // 1000} KB limit: '
                                                      'show fewer or smaller pictures')
            elif not visual_outputs(nb): failed.append(f'{name}: no picture or table among its outputs')
    if failed: raise SystemExit('render_notebooks failed:\n  ' + '\n  '.join(failed))
    print(f'rendered {len(sizes)} notebooks, all under {MAX_BYTES // 1000} KB, each with a picture or table')


if __name__ == '__main__': main()
