"""The GPU check in one call: train the best recipe at 64 px on all of LFW for a fixed number of minutes, then print
held-out identity per guidance scale (as bench/identity.py does), training images/s, and the time to sample 16 guided
64 px images with each sampler.

The device machine gets only the repository's working tree and the ignored paths named in `carry` (64 MiB in all), so
LFW goes there as a pack built beforehand on a machine that has it: JPEG-encoded aligned crops, their dlib ID vectors
and identities, the held-out split, and the judge's (FaceNet's) vectors of the held-out people's photos with its FMR
1e-2 threshold from real LFW impostor pairs (the judge's own detector and alignment need the original photos).

    python bench/gpu.py --pack bench/out/lfw_pack.npz                  # on a machine with LFW (a few minutes; ~40 MB)
    python bench/gpu.py --data bench/out/lfw_pack.npz --minutes 6      # on the GPU machine (carry bench/out/lfw_pack.npz)
    python bench/gpu.py --quick                                        # both halves in miniature, on CPU (the test suite)
"""
import argparse, dataclasses, io, json, sys, time
from pathlib import Path

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--pack', default=None, help='build the data pack at this path (needs LFW) and stop')
    p.add_argument('--data', default=None, help='a data pack from --pack: train, sample and judge')
    p.add_argument('--recipe', default='gpu', help='demo preset to train (id3pm_nb.cli.demo.DEMO_PRESETS)')
    p.add_argument('--minutes', type=float, default=6.)
    p.add_argument('--people', type=int, default=64, help='held-out people (when packing)')
    p.add_argument('--samples', type=int, default=4)
    p.add_argument('--scales', default='0,1,2,3')
    p.add_argument('--size', type=int, default=64, help='crop size to pack and train at')
    p.add_argument('--lfw', default=None)
    p.add_argument('--cache', default=None)
    p.add_argument('--device', default=None)
    p.add_argument('--out', default='bench/out/gpu')
    p.add_argument('--quick', action='store_true', help='tiny data, model and budget, on whatever device there is')
    return p.parse_args(argv)


def log(msg): print(f"[gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _jpeg(im: np.ndarray) -> bytes:
    from PIL import Image
    b = io.BytesIO(); Image.fromarray(im).save(b, format='JPEG', quality=95); return b.getvalue()


def _unjpeg(b: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(b)).convert('RGB'))


def pack(a, path: Path) -> Path:
    "Write the pack: every prepared crop (JPEG), ID vector and identity, the split, and the judge's view of the held-out people."
    from id3pm_nb.cli.demo import demo_data, demo_preset, heldout_people
    from id3pm_nb.data.dataset import holdout_split
    from id3pm_nb.data.lfw import find_lfw
    from id3pm_nb.core import atomic_write
    from id3pm_nb.eval.evaluate import lfw_judge
    from id3pm_nb.fr.recognizer import load_recognizer
    root = find_lfw(a.lfw, download=False)
    pre = demo_preset('cpu', 'cpu')
    P = demo_data(root, dataclasses.replace(pre, n_images=150 if a.quick else None), 0, a.cache, log=log, progress=False)
    split = holdout_split(P.identities, a.people, seed=0)
    held = heldout_people(P, split, a.size, lfw_judge('facenet', root, cache=a.cache, per_fold=3 if a.quick else 30), load_recognizer('dlib'), log=log)
    crops = np.asarray(P.crops[a.size])
    jpegs = np.array([_jpeg(c) for c in crops], dtype=object)
    arrays = dict(jpeg=jpegs, ids=np.asarray(P.ids, np.float32), identities=np.asarray(P.identities), train=split.train, valid=split.valid,
                  first=held.first, second=held.second, names=np.asarray(held.names), targets=held.targets, second_vecs=held.second_vecs,
                  real=held.real, threshold=held.judge.threshold, n_impostor=held.judge.n_impostor, fingerprint=P.fingerprint,
                  judge=held.judge.rec.fingerprint, size=a.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f: np.savez(f, **arrays)
    log(f"packed {len(crops)} crops ({sum(len(j) for j in jpegs) / 2**20:.1f} MiB of JPEG), {len(held.names)} held-out people -> {path} "
        f"({path.stat().st_size / 2**20:.1f} MiB)")
    return path


class Packed:
    "The prepare-cache view (`crops`, `ids`, `identities`, `fingerprint`) that `get_dls` needs, decoded from a pack."
    def __init__(self, z):
        self.size = int(z['size'])
        self.crops = {self.size: np.stack([_unjpeg(b) for b in z['jpeg']])}
        self.ids, self.identities, self.fingerprint = z['ids'], z['identities'], str(z['fingerprint'])
    @property
    def sizes(self): return (self.size,)
    def __len__(self): return len(self.ids)


def sampler_times(pipe, ids: np.ndarray, reps: int = 3) -> dict:
    "Seconds to sample 16 guided (s = 3) images with each sampler at the library's default steps (best of `reps`)."
    import torch
    from id3pm_nb.model.sampling import SamplingSpec
    out = {}
    for name, steps, opts in (('ddpm', SamplingSpec.steps, {}), ('ddim', 25, {}), ('dpmpp_2m', 15, {}), ('dpmpp_2m', 15, {'eta': 1.})):
        ts = []
        for r in range(reps + 1):   # the first call warms up (kernels, autotuning)
            if pipe.device.type == 'cuda': torch.cuda.synchronize()
            t0 = time.perf_counter(); pipe.sample(ids[:16], 1, SamplingSpec(3., name, steps).replace(**opts), seed=r, progress=False)
            if pipe.device.type == 'cuda': torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[f"{name}{'-sde' if opts else ''} {steps} steps"] = round(min(ts[1:]), 3)
    return out


def run(a) -> dict:
    import torch
    from id3pm_nb.cli.demo import DEMO_PRESETS, HeldOut, demo_train, linear_baseline
    from id3pm_nb.core import default_device, seed_everything
    from id3pm_nb.data.dataset import Splits
    from id3pm_nb.eval.evaluate import Judge
    from id3pm_nb.eval.report import markdown_table
    from id3pm_nb.fr.recognizer import load_recognizer
    from id3pm_nb.use.pipeline import ID3PM
    from id3pm_nb.model.sampling import SamplingSpec
    seed_everything(0)
    dev, out = default_device(a.device), Path(a.out)
    with np.load(a.data, allow_pickle=True) as z: arrays = {k: z[k] for k in z.files}
    P = Packed(arrays)
    pre = DEMO_PRESETS[a.recipe] if not a.quick else dataclasses.replace(
        DEMO_PRESETS['cpu'], name='quick', cfg={'preset': 'tiny', 'ch': 16, 'head_ch': 16, 'patch': 2, 'attn_res': (8,), 'prior_rank': 8}, bs=8)
    if pre.size != P.size: pre = dataclasses.replace(pre, size=P.size, sizes=(P.size,))
    pre = dataclasses.replace(pre, minutes=a.minutes)
    split = Splits(arrays['train'], arrays['valid'], arrays['first'])
    log(f"{len(P.ids)} packed faces at {P.size} px; training {pre.name} for {a.minutes:g} min on {dev}")
    t0 = time.time()
    key = f'{pre.name}-{time.strftime("%Y%m%d-%H%M%S")}'                  # a fresh run each call
    bdir = demo_train(P, split, pre, out/'runs'/key, out/'bundle', dev, log, progress=False)
    train_s = time.time() - t0
    pipe = ID3PM.from_bundle(bdir, device=dev)
    info = pipe.bundle.info; its = info['training']['iterations']
    img_s = its * pre.bs / max(info['meta']['fit'].get('seconds') or train_s, 1e-9)
    rec = load_recognizer('facenet')
    if rec.fingerprint != str(arrays['judge']): raise SystemExit(f"this machine's FaceNet ({rec.fingerprint}) is not the pack's judge ({arrays['judge']})")
    judge = Judge(rec, float(arrays['threshold']), 1e-2, int(arrays['n_impostor']))
    held = HeldOut(list(arrays['names']), arrays['first'], arrays['second'], judge, arrays['targets'], arrays['second_vecs'],
                   arrays['real'], P.crops[P.size][arrays['first']], (pipe.recognizer, P.ids[arrays['first']]))
    ids = P.ids[held.first]
    scales = [float(s) for s in a.scales.split(',')]
    samples = {s: pipe.sample(ids, a.samples, pipe.spec.replace(scale=s, **({'steps': 3} if a.quick else {})), progress=False)
               for s in scales}
    linear = linear_baseline(P, split, P.size)(ids)[:, None]
    table = held.scores({'linear decoder (ridge)': linear, **{f'{pre.name} s = {s:g}': samples[s] for s in scales}})
    times = sampler_times(pipe, ids, reps=1 if a.quick else 3)
    head = (f"{pre.name}: {sum(p.numel() for p in pipe.model.parameters()) / 1e6:.2f}M params, {its} iterations in {a.minutes:g} min on "
            f"{torch.cuda.get_device_name() if dev.type == 'cuda' else dev}: {img_s:.0f} training images/s; "
            f"{len(held.names)} held-out people x {a.samples} samples ({SamplingSpec.sampler} {SamplingSpec.steps} steps)")
    md = markdown_table(table, 'FaceNet', 'dlib')
    print(head); print(md); print('seconds to sample 16 guided images:', json.dumps(times))
    out.mkdir(parents=True, exist_ok=True)
    (out/'gpu.md').write_text(f"# bench/gpu.py\n\n{head}\n\n{md}\n\nseconds to sample 16 guided images: {json.dumps(times)}\n")
    return dict(table=table, train_images_per_s=img_s, iterations=its, sample_seconds=times)


def main(argv=None):
    a = parse(argv)
    if a.quick:
        a.people, a.samples, a.scales, a.minutes, a.size = 3, 2, '0,2', 0.05, 32
        if a.data is None:
            a.data = str(pack(a, Path(a.out)/'pack.npz'))
        return run(a)
    if a.pack: return pack(a, Path(a.pack))
    if not a.data: raise SystemExit("give --pack PATH (build the data pack) or --data PATH (run on it); see --help")
    return run(a)


if __name__ == '__main__': main()
