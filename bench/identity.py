"""How much identity, how real, how varied: inversion recipes side by side on the same held-out LFW people.

Each recipe (a demo preset: `cpu` = the Gaussian prior refined by a patchified U-Net, `cpu-paper` = the paper's
conditioning alone) is trained for the same budget on the same training people (all of LFW but the held-out ones),
then inverts the dlib ID vector of one photo of each held-out person at every guidance scale. One table compares them
with the linear baseline (ridge regression from ID vector to pixels, fitted on the same training people) and with real
photos, all judged by FaceNet, which no recipe trained on:

- FaceNet cosine to the target photo (95% bootstrap interval over people) and the success attack rate at FaceNet's
  FMR 1e-2 threshold from real LFW impostor pairs (photos through FaceNet's own MTCNN alignment);
- the share of samples in which MTCNN finds a face; ID diversity among one person's samples;
- FD, the Frechet distance between FaceNet features of real held-out faces and of one sample per person (realism).

It writes identity.md, identity.json and grid.png into --out and prints the table. Trained models are cached in --out
(rerun to reuse them; --minutes changes the run key and retrains).

    python bench/identity.py                                  # cpu vs cpu-paper, 10 min each on 2 cores, 64 people
    python bench/identity.py --recipes cpu --scales 0,1,2,3,4 --samples 6
    python bench/identity.py --quick                          # a miniature of every step (the test suite runs it)
"""
import argparse, dataclasses, json, sys, time
from pathlib import Path

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--recipes', default='cpu,cpu-paper', help='demo presets to train and compare (id3pm_nb.cli.demo.DEMO_PRESETS)')
    p.add_argument('--minutes', type=float, default=None, help='training budget per recipe (default: the preset\'s own)')
    p.add_argument('--people', type=int, default=64, help='held-out people to invert')
    p.add_argument('--samples', type=int, default=4, help='samples per person and scale')
    p.add_argument('--scales', default='0,1,2,3')
    p.add_argument('--sampler', default=None, help='default: the library default (id3pm_nb.model.sampling.SamplingSpec)')
    p.add_argument('--steps', type=int, default=None)
    p.add_argument('--eta', type=float, default=None, help='ddim / dpmpp_2m stochasticity')
    p.add_argument('--temperature', type=float, default=None, help='noise scale (default: the library default)')
    p.add_argument('--samplers', default=None, help="besides the default sampler: a sweep on the first recipe, e.g. "
                   "'ddpm:10,ddpm:25,ddim:25:0,ddim:15:1,dpmpp_2m:15:0,dpmpp_2m:15:1' (name:steps[:eta])")
    p.add_argument('--images', type=int, default=None, help='LFW images (default: all)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='bench/out/identity')
    p.add_argument('--lfw', default=None, help='LFW folder (default $ID3PM_LFW)')
    p.add_argument('--cache', default=None, help='prepare cache folder (default: the id3pm_nb cache)')
    p.add_argument('--device', default=None)
    p.add_argument('--quick', action='store_true', help='tiny models, data and budget: checks that every step runs')
    return p.parse_args(argv)


def log(msg): print(f"[identity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quick_presets():
    "Miniature versions of the two recipes, for --quick."
    from id3pm_nb.cli.demo import DemoPreset
    tiny = {'preset': 'tiny', 'ch': 16, 'head_ch': 16}
    return {'cpu': DemoPreset('quick', {**tiny, 'patch': 2, 'attn_res': (8,), 'prior_rank': 8}, 32, 150, 8, 2e-3, 0.05, precision='bf16'),
            'cpu-paper': DemoPreset('quick-paper', tiny, 32, 150, 8, 2e-3, 0.05)}


def run(a) -> dict:
    from id3pm_nb.cli.demo import (DEMO_PRESETS, bundle_matches, demo_data, demo_key, demo_train, heldout_people,
                                   linear_baseline)
    from id3pm_nb.data.dataset import holdout_split
    from id3pm_nb.eval.report import labeled_grid
    from id3pm_nb.eval.attack import Budget, attack
    from id3pm_nb.data.lfw import find_lfw
    from id3pm_nb.core import atomic_write, default_device, seed_everything
    from id3pm_nb.eval.evaluate import lfw_judge
    from id3pm_nb.eval.report import markdown_table
    from id3pm_nb.use.pipeline import ID3PM
    from id3pm_nb.model.sampling import SamplingSpec
    if a.quick: a.people, a.samples, a.scales, a.steps, a.images = min(a.people, 3), 2, '0,2', 3, a.images or 150
    presets = quick_presets() if a.quick else DEMO_PRESETS
    recipes = [r.strip() for r in a.recipes.split(',') if r.strip()]
    bad = [r for r in recipes if r not in presets]
    if bad: raise SystemExit(f"--recipes: unknown {bad}; choose from {list(presets)}")
    sampler, steps = a.sampler or SamplingSpec.sampler, a.steps or SamplingSpec.steps
    temperature = SamplingSpec.temperature if a.temperature is None else a.temperature
    spec = SamplingSpec(sampler=sampler, steps=steps, temperature=temperature).replace(**({} if a.eta is None else {'eta': a.eta}))
    scales = [float(s) for s in a.scales.split(',')]
    dev, out, root = default_device(a.device), Path(a.out), find_lfw(a.lfw, download=False)
    out.mkdir(parents=True, exist_ok=True); seed_everything(a.seed)
    first = dataclasses.replace(presets[recipes[0]], n_images=a.images)
    P = demo_data(root, first, a.seed, a.cache, log=log, progress=False)
    split = holdout_split(P.identities, a.people, seed=a.seed)
    log(f"{len(split.train)} training images of {len(set(P.identities[split.train]))} people; {a.people} held-out people")
    judge = lfw_judge('facenet', root, cache=a.cache, per_fold=3 if a.quick else 30)
    pipes, trained = {}, {}
    for r in recipes:
        pre = dataclasses.replace(presets[r], n_images=a.images, minutes=presets[r].minutes if a.minutes is None else a.minutes)
        minutes = pre.minutes
        key = demo_key(pre, a.people, a.seed, P.fingerprint, P.ids.shape[1])
        reused = bundle_matches(out/r/'bundle', key)
        bdir = demo_train(P, split, pre, out/'runs'/key, out/r/'bundle', dev, log, progress=False)
        pipes[r] = ID3PM.from_bundle(bdir, device=dev)
        fit = pipes[r].bundle.info['meta'].get('fit', {})
        trained[r] = dict(iterations=pipes[r].bundle.info['training']['iterations'], minutes=minutes, seconds=fit.get('seconds'),
                          params_m=sum(p.numel() for p in pipes[r].model.parameters()) / 1e6, prior_rank=pipes[r].model.cfg.prior_rank,
                          reused=reused)
        log(f"{r}: {trained[r]}")
    held = heldout_people(P, split, first.size, judge, pipes[recipes[0]].recognizer, log=log)
    ids = np.asarray(P.ids)[held.first]
    linear = linear_baseline(P, split, first.size)(ids)[:, None]
    methods, samples = {'linear decoder (ridge)': linear}, {}
    at_scales = lambda pipe, sp: {s: attack(pipe, ids, Budget(), a.samples, sp.replace(scale=s), a.seed, out/'runs', log)[0] for s in scales}
    for r in recipes:
        samples[r] = at_scales(pipes[r], spec)
        methods.update({f'{r} s = {s:g}': samples[r][s] for s in scales})
    for spec in (a.samplers.split(',') if a.samplers else []):   # the sampler sweep, on the first recipe
        name, st, *eta = spec.split(':')
        sweep = SamplingSpec(sampler=name, steps=int(st), temperature=temperature).replace(**({'eta': float(eta[0])} if eta else {}))
        sw = at_scales(pipes[recipes[0]], sweep)
        methods.update({f'{recipes[0]} {spec} s = {s:g}': sw[s] for s in scales})
    table = held.scores(methods)
    md = markdown_table(table, 'FaceNet', 'dlib')
    n_show = min(6, len(held.names)); big = np.asarray(P.crops[max(P.sizes)])
    cols = ['real', 'linear'] + [f'{r} {s:g}' for r in recipes for s in scales]
    grid = labeled_grid([[big[held.first[i]], linear[i, 0]] + [samples[r][s][i, 0] for r in recipes for s in scales] for i in range(n_show)],
                        cols, held.names[:n_show], size=max(P.sizes))
    from PIL import Image
    with atomic_write(out/'grid.png') as f: Image.fromarray(grid).save(f, format='PNG')
    head = (f"{len(held.names)} held-out LFW people x {a.samples} samples, {sampler} {steps} steps, temperature {temperature:g}{'' if a.eta is None else f', eta {a.eta:g}'}; "
            f"judge {judge}; {len(held.real)} real held-out faces for FD; training: "
            + '; '.join(f"{r} {t['params_m']:.2f}M params, {t['iterations']} it. in {t['minutes']:g} min" for r, t in trained.items()))
    (out/'identity.md').write_text(f"# bench/identity.py\n\n{head}\n\n{md}\n")
    with atomic_write(out/'identity.json', 'w') as f:
        json.dump(dict(setup=head, trained=trained, scores=json.loads(table.to_json(orient='index'))), f, indent=1)
    print(head); print(md)
    return dict(table=table, trained=trained, out=out)


def main(argv=None): return run(parse(argv))


if __name__ == '__main__': main()
