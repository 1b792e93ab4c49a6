"""Does the super-resolution stage beat bicubic upsampling? Side by side, on people neither stage trained on.

For a base bundle with an SR stage attached (`id3pm_train_sr --attach`) and a prepare cache holding both of the
stage's sizes (e.g. 32 and 64 px):

- real faces: each held-out person's aligned crop at the low-res side (the cache's own smaller crop: an area
  downsampling of the same aligned face) is super-resolved and compared with the real high-res crop: PSNR and SSIM;
- generated faces: the base model's samples from the person's ID vector (guidance --scale), super-resolved;
- for both: FaceNet cosine to the person's photo (the photo through FaceNet's own detector and alignment, the images
  through `Judge.images`, as `demo.heldout_people` judges the demo; 95% bootstrap interval over people), the success
  attack rate at FaceNet's FMR 1e-2 threshold, and sharpness (variance of the Laplacian, `superres.sharpness`);

each next to bicubic upsampling of the same images, with the real high-res crop as the reference; plus the seconds the
SR stage adds per 16 images, timed in this run next to the base model's own. It writes superres.md, superres.json and
grid.png into --out and prints the table.

    python bench/superres.py --bundle RUN/bundle --data CACHE                 # the stage's own sampling settings
    python bench/superres.py --bundle RUN/bundle --data CACHE --temperatures 0.3,0.5,0.8,1
    python bench/superres.py --quick                                          # a miniature of every step (the test suite runs it)
"""
import argparse, json, math, sys, time
from pathlib import Path

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bundle', help='base bundle with an SR stage (BUNDLE/sr/)')
    p.add_argument('--data', help='prepare cache with the SR stage\'s low- and high-res crops (held-out people come from it)')
    p.add_argument('--people', type=int, default=64, help='held-out people')
    p.add_argument('--samples', type=int, default=2, help='generated samples per person')
    p.add_argument('--scale', type=float, default=3., help='guidance scale of the base model\'s samples')
    p.add_argument('--temperatures', default=None, help='SR sampling temperatures to compare (default: the stage\'s own)')
    p.add_argument('--steps', type=int, default=None, help='SR sampling steps (default: the library default)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='bench/out/superres')
    p.add_argument('--lfw', default=None, help='LFW folder with pairs.txt, for the judge\'s threshold (default $ID3PM_LFW)')
    p.add_argument('--cache', default=None, help='prepare cache folder for the judge\'s photos (default: the id3pm_nb cache)')
    p.add_argument('--device', default=None)
    p.add_argument('--quick', action='store_true', help='tiny data, base model and SR stage: checks that every step runs')
    return p.parse_args(argv)


def log(msg): print(f"[superres {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quick_bundle(out: Path, lfw: str, cache: str):
    "A miniature base model and SR stage (a few iterations on 60 LFW faces at 32 and 64 px), attached: (bundle, cache)."
    from id3pm_nb.cli.demo import DemoPreset, demo_train
    from id3pm_nb.data.dataset import holdout_split
    from id3pm_nb.train.sr import sr_train
    from id3pm_nb.data.lfw import find_lfw, lfw_subset
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.data.dataset import scan
    from id3pm_nb.model.superres import SRPreset, attach_sr
    P = prepare(lfw_subset(scan(find_lfw(lfw)), 60), out_dir=cache, sizes=(32, 64), progress=False, verbose=False)
    split = holdout_split(P.identities, 3)
    base = DemoPreset('quick', {'preset': 'tiny', 'ch': 16, 'head_ch': 16, 'patch': 2, 'attn_res': (8,), 'prior_rank': 8}, 32, 60, 8, 2e-3, 0.05)
    bdir = demo_train(P, split, base, out/'base', out/'bundle', 'cpu', log, progress=False)
    sr = SRPreset('quick', {'preset': 'tiny', 'ch': 16, 'head_ch': 16, 'patch': 2}, 32, 64, 8, 2e-3, 0.05)
    attach_sr(bdir, sr_train(P, split, sr, out/'sr', epochs=1, log=log, progress=False))
    return bdir, P.root


def heldout(P, trained_on: frozenset, n: int, seed: int):
    "`Splits` whose test rows are all photos of `n` people (seeded choice) with two or more photos whom neither stage saw."
    from id3pm_nb.data.dataset import Splits
    names, counts = np.unique(P.identities, return_counts=True)
    cand = sorted(set(names[counts >= 2]) - set(trained_on))
    if len(cand) < 2: raise SystemExit(f"only {len(cand)} held-out people with two photos in {P.root}: prepare more people")
    who = np.random.default_rng(seed).choice(cand, min(n, len(cand)), replace=False)
    empty = np.zeros(0, np.int64)
    return Splits(empty, empty, np.flatnonzero(np.isin(P.identities, who)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    "Mean PSNR (dB) of uint8 images `a` against `b` (N, H, W, 3)."
    mse = (((a.astype(np.float64) - b.astype(np.float64)) / 255) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(1 / np.maximum(mse, 1e-12))))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    "Mean SSIM of uint8 images `a` against `b` (N, H, W, 3), over the colour channels."
    from skimage.metrics import structural_similarity
    return float(np.mean([structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(a, b)]))


def row(held, imgs: np.ndarray, real: np.ndarray | None = None, ref: dict | None = None) -> dict:
    "FaceNet cosine [95% CI], SAR, sharpness of images (N, n, S, S, 3) of the held-out people; PSNR/SSIM against `real`; the cosine gain over `ref`."
    from id3pm_nb.core import img2tensor
    from id3pm_nb.eval.metrics import bootstrap_ci
    from id3pm_nb.model.superres import sharpness
    N, n = imgs.shape[:2]
    flat = imgs.reshape(N * n, *imgs.shape[2:])
    t = held.targets / np.linalg.norm(held.targets, axis=1, keepdims=True)
    cos = np.einsum('ind,id->in', held.judge.images(flat).reshape(N, n, -1), t)              # (N, n)
    per = cos.mean(1)
    r = dict(per=per, cos=float(per.mean()), sar=float((cos > held.judge.threshold).mean()), sharpness=float(sharpness(img2tensor(flat)).mean()))
    r['cos_lo'], r['cos_hi'] = bootstrap_ci(per)
    if real is not None: r.update(psnr=psnr(flat, real), ssim=ssim(flat, real))
    if ref is not None: r['gain'], r['gain_ci'] = float((per - ref['per']).mean()), bootstrap_ci(per - ref['per'])
    return r


def table_md(rows: dict, judge: str = 'FaceNet') -> str:
    "The rows as a markdown table."
    f = lambda v, d=3: '' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{d}f}'
    lines = [f'| images | method | PSNR (dB) | SSIM | {judge} cos [95% CI] | cos gain over bicubic [95% CI] | SAR@FMR1e-2 | sharpness |',
             '|---|---|---|---|---|---|---|---|']
    for (kind, name), r in rows.items():
        gain = f"{r['gain']:+.3f} [{r['gain_ci'][0]:+.3f}, {r['gain_ci'][1]:+.3f}]" if 'gain' in r else ''
        lines.append(f"| {kind} | {name} | {f(r.get('psnr'), 2)} | {f(r.get('ssim'))} | {f(r['cos'])} [{f(r['cos_lo'])}, {f(r['cos_hi'])}] | "
                     f"{gain} | {f(r['sar'], 2)} | {f(r['sharpness'], 4)} |")
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse(argv)
    from id3pm_nb.cli.demo import heldout_people
    from id3pm_nb.eval.report import labeled_grid
    from id3pm_nb.core import atomic_write, default_device, img2tensor, tensor2img
    from id3pm_nb.data.store import load_prepared
    from id3pm_nb.eval.evaluate import lfw_judge
    from id3pm_nb.use.pipeline import ID3PM
    from id3pm_nb.model.superres import bicubic
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.people, args.samples = 3, 1
        args.bundle, args.data = quick_bundle(out, args.lfw, args.cache or str(out/'cache'))
    if not args.bundle or not args.data: raise SystemExit("give --bundle (a base bundle with an SR stage) and --data (its prepare cache), or --quick")
    dev = default_device(args.device)
    pipe = ID3PM.from_bundle(args.bundle, device=dev)
    if pipe.sr_model is None: raise SystemExit(f"{args.bundle} has no SR stage: attach one with id3pm_train_sr --attach {args.bundle}")
    lo, hi = pipe.sr_model.cfg.low_res_size, pipe.sr_model.cfg.image_size
    P = load_prepared(args.data)
    if not {lo, hi} <= set(P.sizes): raise SystemExit(f"{P.root} has sizes {P.sizes}; the SR stage needs {lo} and {hi}: prepare them")
    if pipe.bundle.trained_on is None: raise SystemExit(f"{args.bundle} does not say whom its stages trained on: no held-out people can be chosen")
    judge = lfw_judge('facenet', args.lfw, per_fold=2 if args.quick else 30, cache=args.cache)
    held = heldout_people(P, heldout(P, pipe.bundle.trained_on, args.people, args.seed), hi, judge, per_person=2, log=log)
    log(f"{len(held.names)} held-out people; judge {judge}")
    ids = np.asarray(P.ids)[held.first]
    low_real, real = np.asarray(P.crops[lo])[held.first][:, None], np.asarray(P.crops[hi])[held.first]
    t0 = time.time()
    gen = pipe.sample(ids, args.samples, pipe.spec.replace(scale=args.scale), seed=args.seed, progress=False)                 # (N, n, lo, lo, 3)
    base_per16 = 16 * (time.time() - t0) / gen[:, :, 0, 0, 0].size
    bic = lambda x: tensor2img(bicubic(img2tensor(x.reshape(-1, *x.shape[2:])), hi)).reshape(*x.shape[:2], hi, hi, 3)
    sr_spec = pipe.bundle.sr.spec
    temps = [float(t) for t in args.temperatures.split(',')] if args.temperatures else [sr_spec.temperature]
    opts = {} if args.steps is None else {'steps': args.steps}
    spec_at = lambda T: sr_spec.replace(temperature=T, **opts)
    rows = {('real', f'real {hi} px crop'): row(held, real[:, None]), ('real', f'bicubic from {lo} px'): row(held, bic(low_real), real)}
    rows[('generated', f'bicubic, s = {args.scale:g}')] = row(held, bic(gen))
    ref = {'real': rows[('real', f'bicubic from {lo} px')], 'generated': rows[('generated', f'bicubic, s = {args.scale:g}')]}
    sr_imgs, times = {}, {}
    for T in temps:
        name = 'SR stage' + (f', temperature {T:g}' if T is not None else '')
        sr_real = pipe.upsample(low_real, ids, spec_at(T), seed=args.seed)
        t0 = time.time(); sr_gen = pipe.upsample(gen, ids, spec_at(T), seed=args.seed); times[T] = 16 * (time.time() - t0) / gen[:, :, 0, 0, 0].size
        rows[('real', name)] = row(held, sr_real, real, ref['real'])
        rows[('generated', f'{name}, s = {args.scale:g}')] = row(held, sr_gen, ref=ref['generated'])
        sr_imgs[T] = (sr_real, sr_gen)
    md = table_md(dict(sorted(rows.items(), key=lambda kv: kv[0][0] != 'real')))
    T0 = temps[0]
    timing = (f"SR adds {times[T0]:.2f} s per 16 images on {dev} (the base model's {pipe.image_size} px sampling: {base_per16:.2f} s per 16; "
              f"bicubic: negligible); {len(held.names)} held-out people, {args.samples} generated samples each at s = {args.scale:g}.")
    print(md); print(timing)
    k = min(6, len(held.names))
    grid = labeled_grid([[bic(low_real)[i, 0], sr_imgs[T0][0][i, 0], real[i], bic(gen)[i, 0], sr_imgs[T0][1][i, 0]] for i in range(k)],
                        [f'bicubic {lo}', 'SR', f'real {hi}', 'gen. bicubic', 'gen. SR'], held.names[:k], size=hi)
    from PIL import Image
    with atomic_write(out/'grid.png') as f: Image.fromarray(grid).save(f, format='PNG')
    (out/'superres.md').write_text(f"# SR stage vs bicubic upsampling ({args.bundle})\n\n{md}\n\n{timing}\n")
    js = dict(bundle=str(args.bundle), data=str(P.root), people=held.names, low=lo, high=hi, scale=args.scale, samples=args.samples,
              sr_seconds_per16=times, base_seconds_per16=base_per16, rows={f'{a}: {b}': {k: v for k, v in r.items() if k != 'per'} for (a, b), r in rows.items()})
    with atomic_write(out/'superres.json', 'w') as f: json.dump(js, f, indent=1, default=str)
    return dict(rows=rows, sr_seconds_per16=times, base_seconds_per16=base_per16, people=held.names, grid=out/'grid.png')


if __name__ == '__main__': main()
