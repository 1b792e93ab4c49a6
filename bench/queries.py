"""Queries to the black box, side by side: strategies x budgets on the demo's held-out people, in one run.

The demo's model inverts dlib; the attack may query dlib (images in, ID vectors out) and spends a budget of queries per
returned image. Every strategy of `id3pm_nb.use.queries` runs at every budget, with each surrogate step of the returned
image (`--steps`: 0, none, and 0.5, the default `QuerySpec.step`; no extra query), on the same held-out LFW people, next to
plain sampling (0 queries), the linear decoder (ridge from ID vector to pixels) and real photos. FaceNet judges: it
was never trained on and never queried. Columns: FaceNet cosine to the target photo (95% bootstrap interval over
people), success attack rate at FaceNet's FMR 1e-2 and 1e-3 thresholds (from real LFW impostor pairs), faces found by
its detector, ID diversity among a person's images, FD (Frechet distance of FaceNet features to real held-out faces),
dlib's own cosine (what the search optimised), queries and seconds per returned image.

    python bench/queries.py                                   # the demo's bundle (id3pm_demo/bundle), s = 3
    python bench/queries.py --budgets 4,16,64 --strategies best,beam --steps 0.5 --scale 2
    python bench/queries.py --strategies best --budgets 16 --temperatures 0.6,0.8   # the candidates' temperature
    python bench/queries.py --quick                           # a miniature of every step (the test suite runs it)

It writes queries.md, queries.json and curve.png (identity against queries per strategy) into --out. The bundle comes
from --bundle; without one, the demo trains it (`id3pm_demo`'s preset and split, cached in --out).
"""
import argparse, dataclasses, json, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _heldout import held_out   # noqa: E402  the demo's held-out people, shared with bench/cads.py


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bundle', default=None, help='a bundle trained by the demo (default: id3pm_demo/bundle, else train one)')
    p.add_argument('--strategies', default='best,beam,feedback,feedback+beam', help='id3pm_nb.use.queries.STRATEGIES to compare')
    p.add_argument('--budgets', default='4,16', help='queries per returned image (0, plain sampling, is always a row)')
    p.add_argument('--steps', default='0,0.5', help='surrogate steps of the returned image (QuerySpec.step; 0: off) per query row')
    p.add_argument('--temperatures', default=None, help="the query candidates' temperatures (QuerySpec.temperature; 'spec': the sampling spec's), e.g. 0.6,0.8")
    p.add_argument('--scale', type=float, default=3.0, help='guidance scale')
    p.add_argument('--cads', type=float, default=0., help='CADS noise scale for every row, plain included (0: plain rows without; query rows then use QuerySpec.cads)')
    p.add_argument('--people', type=int, default=64, help='held-out people to invert')
    p.add_argument('--samples', type=int, default=4, help='returned images per person')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='bench/out/queries')
    p.add_argument('--lfw', default=None, help='LFW folder (default $ID3PM_LFW)')
    p.add_argument('--cache', default=None, help='prepare cache folder (default: the id3pm_nb cache)')
    p.add_argument('--device', default=None)
    p.add_argument('--quick', action='store_true', help='a tiny model, data and budget: checks that every step runs')
    return p.parse_args(argv)


def log(msg): print(f"[queries {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(a) -> dict:
    from id3pm_nb.core import atomic_write
    from id3pm_nb.eval.attack import attack, attack_table, budgets as make_budgets
    from id3pm_nb.cli.demo import linear_baseline
    from id3pm_nb.eval.report import labeled_grid
    from id3pm_nb.eval.report import markdown_table, query_curve
    from id3pm_nb.use.queries import STRATEGIES, QuerySpec
    strategies = [s.strip() for s in a.strategies.split(',') if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad: raise SystemExit(f"--strategies: unknown {bad}; choose from {list(STRATEGIES)}")
    budgets = sorted({int(b) for b in a.budgets.split(',') if int(b) > 0})
    if a.quick: a.samples, budgets = 2, budgets[:1] or [2]
    h = held_out(a, log, queried=True)
    out, P, split, pipe, judge, held, ids, bundle = h.out, h.P, h.split, h.pipe, h.judge, h.held, h.ids, h.bundle
    spec = pipe.spec.replace(scale=a.scale, cads=a.cads, **({'steps': 3} if a.quick else {}))
    temps = [None if v.strip() == 'spec' else float(v) for v in a.temperatures.split(',')] if a.temperatures else [QuerySpec.temperature]
    rows = make_budgets(strategies, budgets, [float(v) for v in a.steps.split(',')], temps)
    samples, costs = {}, {}
    for b in rows: samples[b.label], costs[b.label] = attack(pipe, ids, b, a.samples, spec, a.seed, out/'runs', log)
    linear = linear_baseline(P, split, h.pre.size)(ids)[:, None]
    table = attack_table(held.scores({'linear decoder (ridge)': linear, **samples}), costs)
    md = markdown_table(table, 'FaceNet', 'dlib')
    n_show = min(6, len(held.names)); big = np.asarray(P.crops[max(P.sizes)])
    shown = [b for b in rows if b.queries in (0, budgets[-1]) and b.step in (0, QuerySpec.step)]
    short = lambda b: 'plain' if not b.queries else (b.strategy + b.note).replace('feedback', 'fb').replace(
        ', step ', ' st').replace(', temperature ', ' T')
    grid = labeled_grid([[big[held.first[i]], linear[i, 0]] + [samples[b.label][i, 0] for b in shown] for i in range(n_show)],
                        ['real', 'linear'] + [short(b) for b in shown], held.names[:n_show], size=max(P.sizes),
                        corner=f'{budgets[-1]} queries')
    from PIL import Image
    with atomic_write(out/'grid.png') as f: Image.fromarray(grid).save(f, format='PNG')
    line = lambda b: b.strategy and b.strategy + b.note
    query_curve(table, [(b.label, line(b), b.queries) for b in rows], out/'curve.png', 'linear decoder (ridge)', 'FaceNet')
    head = (f"{len(held.names)} held-out LFW people x {a.samples} images, s = {a.scale:g}, {spec.sampler} {spec.steps} steps, "
            f"temperature {spec.temperature:g}{f', CADS {a.cads:g}' if a.cads else ''} (query candidates: temperature "
            f"{QuerySpec.temperature:g} unless a row says, CADS {a.cads or QuerySpec.cads:g}); queried: {pipe.recognizer.fingerprint}; "
            f"judge {judge}; bundle {bundle} ({pipe.bundle.info['training']['iterations']} iterations)")
    (out/'queries.md').write_text(f"# bench/queries.py\n\n{head}\n\n{md}\n\n![identity against queries](curve.png)\n")
    with atomic_write(out/'queries.json', 'w') as f:
        json.dump(dict(setup=head, scores=json.loads(table.to_json(orient='index'))), f, indent=1)
    print(head); print(md)
    return dict(table=table, rows=rows, out=out)


def main(argv=None): return run(parse(argv))


if __name__ == '__main__': main()
