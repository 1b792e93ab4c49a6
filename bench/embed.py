#!/usr/bin/env python3
"""Benchmarks on LFW, measured side by side in one run.

embed:   images/s of each offline recognizer (dlib, FaceNet ONNX), batched vs one image per call, and the ratio.
         On a CPU both are compute-bound (ratio near 1); batching pays where per-call overhead dominates (GPU).
prepare: prepare.prepare over ~200 LFW images, a first run vs a second (cached) run over the same files, and the ratio.

Usage: python bench/embed.py [--what embed|prepare|all] [--n 256] [--bs 64] [--lfw PATH]   (LFW path default: $ID3PM_LFW)
"""
import argparse, os, time

import numpy as np

from id3pm_nb.fr.align import load_rgb
from id3pm_nb.fr.detect import find_landmarks, ort_providers
from id3pm_nb.fr.recognizer import load_recognizer
from id3pm_nb.data.lfw import read_lfw_pairs


def lfw_images(n: int, root=None) -> tuple[list, np.ndarray]:
    "The first `n` distinct LFW pair images (uint8 RGB) and their dlib landmarks (median fallback)."
    paths = list(dict.fromkeys(p for pr in read_lfw_pairs(root) for p in pr[:2]))[:n]
    kps, found = find_landmarks(paths, 'dlib', progress=False)
    print(f'{len(paths)} LFW images, dlib found a face in {found.sum()}')
    return [load_rgb(p) for p in paths], kps


def throughput(rec, crops: np.ndarray, bs: int) -> tuple[float, float]:
    "Images/s of `rec.embed` on `crops`: batches of `bs`, then one image per call."
    rec.embed(crops[:min(bs, len(crops))], bs=bs, progress=False)                      # warm-up (allocations, caches)
    t = time.perf_counter(); rec.embed(crops, bs=bs, progress=False); batched = len(crops) / (time.perf_counter() - t)
    t = time.perf_counter()
    for c in crops: rec.embed(c[None], bs=1, progress=False)
    single = len(crops) / (time.perf_counter() - t)
    return batched, single


def bench_embed(args):
    "Recognizer throughput on LFW faces, batched vs one by one."
    imgs, kps = lfw_images(args.n, args.lfw)
    print(f'onnxruntime provider: {ort_providers()[0]}, CPU threads: {args.threads}, batch size: {args.bs}')
    print(f'{"recognizer":<28}{"batched img/s":>14}{"1-by-1 img/s":>14}{"ratio":>8}')
    for name in args.recognizers:
        rec = load_recognizer(name, **({'threads': args.threads} if args.threads and name != 'dlib' else {}))
        crops = np.stack([rec.crop(im, k) for im, k in zip(imgs, kps)])
        b, s = throughput(rec, crops, args.bs)
        print(f'{rec.fingerprint:<28}{b:>14.1f}{s:>14.1f}{b/s:>7.2f}x')


def bench_prepare(args):
    "`prepare.prepare` over LFW images: the first run (detect, align, embed, write) vs a second run over the same files."
    import tempfile
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.data.dataset import scan_lfw
    from id3pm_nb.fr.detect import get_detector
    lfw = scan_lfw(args.lfw or os.environ['ID3PM_LFW'])
    src = lfw[lfw.identity.isin(lfw.identity.unique()[::7])].groupby('identity').head(2).head(args.n_prepare)
    t = time.perf_counter(); det, rec = get_detector('dlib'), load_recognizer('dlib'); t_load = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter(); p1 = prepare(src, d, rec, det, progress=False, verbose=False); t1 = time.perf_counter() - t
        t = time.perf_counter(); p2 = prepare(src, d, rec, det, progress=False, verbose=False); t2 = time.perf_counter() - t
    assert (p1.ids == p2.ids).all()
    print(f'{len(src)} LFW files of {src.identity.nunique()} identities, sizes 64+256, dlib (models loaded once in {t_load:.2f}s): {p1.counts()}')
    print(f'first prepare {t1:.2f}s ({len(src)/t1:.1f} img/s), second prepare {t2*1000:.1f}ms: ratio {t1/t2:.0f}x (target >= 50x)')


BENCHES = {'embed': bench_embed, 'prepare': bench_prepare}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--what', default='all', choices=[*BENCHES, 'all'], help='which benchmark to run')
    p.add_argument('--n', type=int, default=256, help='number of LFW images')
    p.add_argument('--bs', type=int, default=64, help='batch size of the batched run')
    p.add_argument('--recognizers', nargs='+', default=['dlib', 'facenet'], help='recognizers to time')
    p.add_argument('--threads', type=int, default=0, help='onnxruntime CPU threads (0: one per core)')
    p.add_argument('--lfw', default=None, help='LFW folder (default: $ID3PM_LFW)')
    p.add_argument('--n-prepare', type=int, default=200, help='number of LFW images for the prepare benchmark')
    args = p.parse_args(argv)
    if not args.threads: args.threads = os.cpu_count()
    for what, f in BENCHES.items():
        if args.what in (what, 'all'): print(f'== {what}'); f(args)


if __name__ == '__main__': main()
