"""Small-scale reproduction of the paper's guidance trade-off (ID3PM, Kansy et al. 2023): identity up, diversity down as s grows.

A fixed training budget on LFW training identities (the `id3pm_demo` recipe; its trained model is reused when the demo
ran in the same folder), then, on LFW people the model never trained on, for each guidance scale s:

- identity similarity: mean cosine of the samples to the target's real ID vector, under dlib (the recognizer that was
  inverted) and FaceNet (an independent one);
- success attack rate: the fraction of samples that pass each recognizer's verification threshold at FMR 1e-2, the
  threshold set from real LFW impostor scores (all different-person pairs among the images of LFW's pairs.txt subset);
- diversity: the mean pairwise ID distance (1 - cosine) among one person's samples, averaged over people.

It writes `repro.md`, `repro.csv` and `repro_grid.png` (real face, then one sample per scale) into --out and prints the table.

    python bench/repro.py                        # reuses ./id3pm_demo (trains it first if needed, 10 min on CPU)
    python bench/repro.py --demo runs/demo --people 48 --samples 6
"""
import argparse, json, os, sys, time
from pathlib import Path

import numpy as np
import pandas as pd


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--demo', default='id3pm_demo', help='id3pm_demo output folder whose trained model to use (trained there if missing)')
    p.add_argument('--out', default=None, help='where to write repro.md / repro.csv (default: DEMO/repro)')
    p.add_argument('--lfw', default=None, help='LFW folder (default $ID3PM_LFW)')
    p.add_argument('--minutes', type=float, default=None, help='training budget if the model must be trained (default: the demo preset)')
    p.add_argument('--people', type=int, default=32, help='held-out people to invert')
    p.add_argument('--samples', type=int, default=4, help='samples per person and scale')
    p.add_argument('--scales', default='0,1,2,3,5')
    p.add_argument('--steps', type=int, default=25, help='DDIM steps')
    p.add_argument('--per-fold', type=int, default=10, help="pairs.txt pairs per fold and kind whose images give the impostor scores")
    p.add_argument('--fmr', type=float, default=1e-2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default=None)
    p.add_argument('--cache', default=None, help='prepare cache folder (default: the id3pm_nb cache)')
    return p.parse_args(argv)


def markdown(df: pd.DataFrame) -> str:
    "A markdown table (numbers with 3 decimals, NaN blank)."
    cell = lambda v: '' if isinstance(v, float) and np.isnan(v) else f'{v:.3f}' if isinstance(v, (float, np.floating)) else str(v)
    return '\n'.join(['| ' + ' | '.join(df.columns) + ' |', '|' + '---|' * len(df.columns)] +
                     ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in df.itertuples(index=False)])


def log(msg): print(f"[repro {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def trained_bundle(a, root, dev):
    "The demo's bundle in `a.demo`, trained with the demo recipe (same key, so it is shared with id3pm_demo) if missing."
    import inspect
    from id3pm_nb.cli import _run_key, demo_preset, demo_train, holdout_split, lfw_subset, run_demo
    from id3pm_nb.data import prepare, scan
    n_test = inspect.signature(run_demo).parameters['n_test'].default  # the demo's split, so both share one trained model
    pre = demo_preset(dev); minutes = pre.minutes if a.minutes is None else a.minutes
    out = Path(a.demo)
    b = out/'bundle'
    if (b/'bundle.json').is_file() and a.minutes is None: return b
    df = lfw_subset(scan(root), pre.n_images, seed=0)
    P = prepare(df, out_dir=a.cache, recognizer='dlib', sizes=sorted({pre.size, *pre.sizes}), verbose=False)
    split = holdout_split(P.identities, n_test, seed=0)
    key = _run_key(pre, minutes, pre.n_images, n_test, 0, P.fingerprint)
    return demo_train(P, split, pre, minutes, out/'runs'/key, b, key, dev, log)


def heldout_people(root, exclude, n, seed):
    "Photos (first two) of `n` LFW people with >= 2 photos who are not in `exclude`."
    from id3pm_nb.data import scan_lfw
    df = scan_lfw(root).sort_values(['identity', 'path'])
    counts = df.identity.value_counts()
    cand = sorted(set(counts[counts >= 2].index) - set(exclude))
    if len(cand) < n: raise SystemExit(f"only {len(cand)} held-out people with two photos; ask for fewer with --people")
    people = list(np.random.default_rng(seed).choice(cand, n, replace=False))
    return df[df.identity.isin(people)].groupby('identity').head(2).reset_index(drop=True)


def embed_photos(df, rec, size, cache):
    "Prepared (dlib-detected, aligned) crops and `rec`'s ID vectors of the photos in `df`, in `df`'s order (None where none)."
    from id3pm_nb.data import prepare
    P = prepare(df[['path', 'identity']], out_dir=cache, recognizer=rec, sizes=(size,), progress=False, verbose=False)
    pos = {p: i for i, p in enumerate(P.paths)}
    keep = np.array([p in pos for p in df.path])
    rows = [pos[p] for p in df.path[keep]]
    return keep, np.asarray(P.crops[size])[rows], np.asarray(P.ids)[rows]


def held_out_targets(root, trained, recs, size, people, seed, cache):
    "Row indices of each held-out person's first and second photo, every recognizer's ID vectors, the aligned crops, the names."
    df = heldout_people(root, trained, people, seed)
    emb, crops, keep = {}, None, np.ones(len(df), bool)
    for fr, rec in recs.items():
        k, c, e = embed_photos(df, rec, size, cache)
        full = np.full((len(df), rec.dim), np.nan, np.float32); full[k] = e; emb[fr] = full; keep &= k
        if fr == 'dlib': crops = np.zeros((len(df), *c.shape[1:]), np.uint8); crops[k] = c
    ok = df[keep].groupby('identity').filter(lambda g: len(g) == 2)
    firsts = ok.groupby('identity').head(1)
    return firsts.index.to_numpy(), ok.groupby('identity').tail(1).index.to_numpy(), emb, crops, firsts.identity.tolist()


def main(argv=None):
    a = parse(argv)
    import torch
    from id3pm_nb.core import default_device
    from id3pm_nb.fr import cosine, load_recognizer
    from id3pm_nb.pipeline import ID3PM
    from id3pm_nb.evaluate import accept_rate, fmr_threshold, impostor_scores, lfw_eval_data
    from id3pm_nb.cli import cached_samples, find_lfw, inversion_scores
    t0 = time.time()
    dev = default_device(a.device); root = find_lfw(a.lfw)
    bdir = trained_bundle(a, root, dev)
    pipe = ID3PM.from_bundle(bdir, device=dev)
    info = pipe.bundle.info; trained = info.get('meta', {}).get('train_identities') or []
    if not trained: raise SystemExit(f"{bdir} does not list its training identities (bundle meta 'train_identities'): cannot pick held-out people")
    out = Path(a.out or Path(a.demo)/'repro'); out.mkdir(parents=True, exist_ok=True)
    recs = {'dlib': pipe.recognizer, 'facenet': load_recognizer('facenet')}

    first, second, emb, crops, people_names = held_out_targets(root, trained, recs, pipe.image_size, a.people, a.seed, a.cache)
    log(f"{len(first)} held-out people (of {a.people} drawn; the others lost a photo to face detection)")

    # thresholds at the FMR from real impostor scores (different-person pairs among the images of the pairs.txt subset)
    data = lfw_eval_data(root, recs, per_fold=a.per_fold, max_gallery=0, out_dir=a.cache)
    thr, real_rows = {}, {}
    for fr in recs:
        imp = impostor_scores(data.emb[fr], data.identities)
        thr[fr] = fmr_threshold(imp, a.fmr)
        g = data.pairs[data.pairs.same]
        real_rows[fr] = dict(n_impostor=len(imp), thr=thr[fr], tmr=accept_rate(cosine(data.emb[fr][g.a], data.emb[fr][g.b]), thr[fr]))
    log(f"thresholds at FMR {a.fmr:g}: " + ', '.join(f"{fr} {v['thr']:.3f} ({v['n_impostor']} impostor pairs, real genuine pass {v['tmr']:.2f})" for fr, v in real_rows.items()))

    scales = [float(s) for s in a.scales.split(',')]
    samples = cached_samples(pipe, emb['dlib'][first], scales, a.samples, a.steps, 'ddim', a.seed, out, log)
    sc = inversion_scores(samples, {fr: emb[fr][first] for fr in recs}, recs, thr)
    from PIL import Image
    from id3pm_nb.cli import labeled_grid
    n_show = min(8, len(first))                  # the picture of the trade-off: real face, then sample 0 at every scale
    grid = labeled_grid([[crops[first[i]]] + [samples[s][i, 0] for s in scales] for i in range(n_show)],
                        ['real'] + [f's = {s:g}' for s in scales], [str(n)[:12] for n in people_names[:n_show]], size=pipe.image_size * 2)
    Image.fromarray(grid).save(out/'repro_grid.png')

    # references: what real photos score against the same targets
    refs = {}
    for fr, rec in recs.items():
        real_small = cosine(rec.embed_images(crops[first], progress=False), emb[fr][first])
        same, other = cosine(emb[fr][second], emb[fr][first]), cosine(emb[fr][first], emb[fr][first], matrix=True)[~np.eye(len(first), dtype=bool)]
        refs[fr] = {f'real face at {pipe.image_size} px': (real_small.mean(), accept_rate(real_small, thr[fr])),
                    'another photo, same person': (same.mean(), accept_rate(same, thr[fr])),
                    'different people': (other.mean(), accept_rate(other, thr[fr]))}

    rows = []
    for s in scales:
        r = sc[sc.scale == s].set_index('fr')
        rows.append({'s': f'{s:g}', 'dlib cos': r.cos['dlib'], 'FaceNet cos': r.cos['facenet'],
                     f'FaceNet SAR@{a.fmr:g}': r.sar['facenet'], f'dlib SAR@{a.fmr:g}': r.sar['dlib'],
                     'dlib div': r['div']['dlib'], 'FaceNet div': r['div']['facenet']})
    for k in refs['dlib']:
        rows.append({'s': f'ref: {k}', 'dlib cos': refs['dlib'][k][0], 'FaceNet cos': refs['facenet'][k][0],
                     f'FaceNet SAR@{a.fmr:g}': refs['facenet'][k][1], f'dlib SAR@{a.fmr:g}': refs['dlib'][k][1],
                     'dlib div': np.nan, 'FaceNet div': np.nan})
    table = pd.DataFrame(rows)
    table.to_csv(out/'repro.csv', index=False)
    fit = info.get('meta', {}).get('fit', {})
    head = (f"ID3PM small-scale reproduction: {pipe} trained {info.get('training', {}).get('iterations')} iterations "
            f"({fit.get('epochs')} epochs, budget {info.get('meta', {}).get('budget_minutes')} min) on {len(trained)} LFW people; "
            f"{len(first)} held-out people x {a.samples} samples per scale, DDIM {a.steps} steps. "
            f"Thresholds at FMR {a.fmr:g} from {real_rows['facenet']['n_impostor']} real LFW impostor pairs: "
            f"dlib {thr['dlib']:.3f}, FaceNet {thr['facenet']:.3f}. cos = mean cosine to the target's real ID vector; "
            f"SAR = fraction of samples accepted as the target; div = mean pairwise 1 - cos among a person's samples.")
    md = head + '\n\n' + markdown(table) + '\n'
    (out/'repro.md').write_text(md)
    with open(out/'repro.json', 'w') as f: json.dump(dict(thresholds=real_rows, n_people=len(first), samples=a.samples, steps=a.steps,
                                                         bundle=str(bdir), seconds=round(time.time() - t0)), f, indent=1, default=float)
    print(md)
    log(f"done in {time.time() - t0:.0f}s; wrote {out/'repro.md'} and {out/'repro.csv'}")


if __name__ == '__main__':
    main()
