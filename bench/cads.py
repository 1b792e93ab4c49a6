"""Condition-annealed sampling (CADS) against plain guidance: identity and diversity at several guidance scales, side by side.

High guidance makes one person's samples alike; CADS (Sadat et al., ICLR 2024) noises the ID condition at high noise
levels and anneals it away (`id3pm_nb.model.sampling.CADS`). On the demo's held-out people, every guidance scale is
sampled without CADS and with each CADS noise scale (at each of --temperatures; the same seeds), and FaceNet (never
trained on, never queried) judges: cosine to the target photo with its 95% interval, SAR at FMR 1e-2 and 1e-3, faces
found, ID diversity among a person's samples, FD (realism), seconds per image.

    python bench/cads.py                                 # the demo's bundle (id3pm_demo/bundle), s = 2, 3, 5, CADS 0.25 and 0.5
    python bench/cads.py --scales 2,3 --cads 0 --temperatures 0.4,0.6,0.8,1   # plain sampling's temperature
    python bench/cads.py --quick                         # a miniature of every step (the test suite runs it)

It writes cads.md and cads.json into --out and prints the table.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _heldout import held_out   # noqa: E402  the demo's held-out people, shared with bench/queries.py


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bundle', default=None, help='a bundle trained by the demo (default: id3pm_demo/bundle, else train one)')
    p.add_argument('--scales', default='2,3,5', help='guidance scales')
    p.add_argument('--cads', default='0.25,0.5', help='CADS noise scales compared with plain guidance (0)')
    p.add_argument('--temperatures', default=None, help="sampling temperatures, e.g. 0.6,0.8 (default: the bundle's spec)")
    p.add_argument('--people', type=int, default=64, help='held-out people to invert')
    p.add_argument('--samples', type=int, default=4, help='samples per person')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='bench/out/cads')
    p.add_argument('--lfw', default=None, help='LFW folder (default $ID3PM_LFW)')
    p.add_argument('--cache', default=None, help='prepare cache folder (default: the id3pm_nb cache)')
    p.add_argument('--device', default=None)
    p.add_argument('--quick', action='store_true', help='a tiny model, data and budget: checks that every step runs')
    return p.parse_args(argv)


def log(msg): print(f"[cads {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(a) -> dict:
    from id3pm_nb.eval.attack import Budget, attack, attack_table
    from id3pm_nb.core import atomic_write
    from id3pm_nb.cli.demo import linear_baseline
    from id3pm_nb.eval.report import markdown_table
    scales, noises = [float(s) for s in a.scales.split(',')], [0.] + [float(c) for c in a.cads.split(',') if float(c) > 0]
    if a.quick: a.samples, scales, noises = 2, scales[:1], noises[:2]
    h = held_out(a, log, queried=False)
    out, P, split, pipe, judge, held, ids, bundle = h.out, h.P, h.split, h.pipe, h.judge, h.held, h.ids, h.bundle
    spec = pipe.spec.replace(**({'steps': 3} if a.quick else {}))
    temps = [float(t) for t in a.temperatures.split(',')] if a.temperatures else [spec.temperature]
    images, costs = {}, {}
    for s in scales:
        for t in temps:
            for c in noises:
                label = f's = {s:g}' + (f', temperature {t:g}' if len(temps) > 1 else '') + (f', CADS {c:g}' if c else '')
                sp = spec.replace(scale=s, cads=c, temperature=t)
                images[label], costs[label] = attack(pipe, ids, Budget(), a.samples, sp, a.seed, out/'runs', log)
    linear = linear_baseline(P, split, h.pre.size)(ids)[:, None]
    table = attack_table(held.scores({'linear decoder (ridge)': linear, **images}), costs)
    md = markdown_table(table, 'FaceNet', 'dlib')
    head = (f"{len(held.names)} held-out LFW people x {a.samples} samples, {spec.sampler} {spec.steps} steps, temperature "
            f"{', '.join(f'{t:g}' for t in temps)}; CADS tau1 0.6, tau2 0.9, rescaled (psi 1); judge {judge}; bundle {bundle}")
    (out/'cads.md').write_text(f"# bench/cads.py\n\n{head}\n\n{md}\n")
    with atomic_write(out/'cads.json', 'w') as f: json.dump(dict(setup=head, scores=json.loads(table.to_json(orient='index'))), f, indent=1)
    print(head); print(md)
    return dict(table=table, labels=list(images), out=out)


def main(argv=None): return run(parse(argv))


if __name__ == '__main__': main()
