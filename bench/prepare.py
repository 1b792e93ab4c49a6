#!/usr/bin/env python3
"""`prepare.prepare` throughput on LFW: the old path and the new one, side by side in one run.

old: workers=1 (read, detect, align and crop in this process) and dlib's own descriptor (`DlibRecognizer(backend='dlib')`)
new: one worker process per core (or --workers) and dlib's network run by torch (`DlibRecognizer()`, the default)

Each path runs in a fresh Python process (nothing loaded or cached in memory beforehand) into a fresh temporary cache
folder, over the same LFW images. Printed: images/s, CPU seconds per image (this process and its workers: on a machine
shared with other jobs, cores / CPU-s-per-image is what idle cores would give), the ratio, whether both caches hold the
same crops, statuses and ID vectors, and dlib's descriptor per face in dlib and in torch with 1 and 2 threads.

Usage: python bench/prepare.py [--images 300] [--lfw PATH] [--workers N] [--faces 32]   (LFW path default: $ID3PM_LFW)
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

import numpy as np


def lfw_sample(lfw: str, n: int):
    "`n` LFW images spread evenly over the whole (sorted) set, as a scan DataFrame."
    from id3pm_nb.data.dataset import scan_lfw
    df = scan_lfw(lfw)
    return df.iloc[np.linspace(0, len(df) - 1, min(n, len(df))).astype(int)].reset_index(drop=True)


def run_path(which: str, lfw: str, n: int, out: str, workers) -> dict:
    "In this process: prepare the sample with the old or the new path; wall seconds, CPU seconds (with workers) and counts."
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.fr.recognizer import DlibRecognizer
    src = lfw_sample(lfw, n)
    old = which == 'old'
    rec = DlibRecognizer(backend='dlib') if old else 'dlib'
    t0, c0 = time.perf_counter(), os.times()
    p = prepare(src, out, rec, 'dlib', workers=1 if old else workers, progress=False, verbose=False)
    t, c = time.perf_counter() - t0, os.times()
    cpu = sum(getattr(c, k) - getattr(c0, k) for k in ('user', 'system', 'children_user', 'children_system'))
    return dict(files=len(src), secs=t, cpu=cpu, counts=p.counts(), root=str(p.root))


def run_descriptor(lfw: str, n: int) -> dict:
    "In this process: ms per face of dlib's descriptor in dlib and in torch (1 and 2 threads), wall and CPU, on `n` LFW chips."
    import torch
    from id3pm_nb.fr.recognizer import DlibRecognizer
    from id3pm_nb.fr.align import load_rgb
    rec, ref = DlibRecognizer(), DlibRecognizer(backend='dlib')
    chips = []
    for p in lfw_sample(lfw, 4 * n).path:
        im = load_rgb(p); faces = rec.detector.detect(im)
        if faces: chips.append(rec.crop(im, faces[0].kps))
        if len(chips) == n: break
    chips = np.stack(chips)

    def timed(r, threads=None):
        if threads: torch.set_num_threads(threads)
        r.embed(chips[:4], progress=False)                                   # warm-up: load, allocate
        t0, c0 = time.perf_counter(), time.process_time()
        v = r.embed(chips, progress=False)
        return v, (time.perf_counter() - t0) / len(chips) * 1e3, (time.process_time() - c0) / len(chips) * 1e3

    vd, *dlib_ms = timed(ref)
    out = {'faces': len(chips), 'dlib': dlib_ms}
    for th in (1, 2):
        vt, *out[f'torch_{th}'] = timed(rec, th)
        out['min_cos'] = float(min(out.get('min_cos', 1.0), (vt * vd).sum(1).min()))
    return out


def child(args_list: list) -> dict:
    "Run this script's --child mode in a fresh interpreter; its JSON result."
    r = subprocess.run([sys.executable, os.path.abspath(__file__), *args_list], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'{" ".join(args_list)} failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(root_old: str, root_new: str) -> str:
    "Whether two caches of the same files agree: crops, statuses, and ID vectors (smallest cosine)."
    from id3pm_nb.data.store import load_prepared
    a, b = load_prepared(root_old), load_prepared(root_new)
    same = (a.report.drop(columns='row').equals(b.report.drop(columns='row')) and list(a.paths) == list(b.paths)
            and all(np.array_equal(a.crops[s], b.crops[s]) for s in a.sizes))
    cos = float((np.asarray(a.ids) * np.asarray(b.ids)).sum(1).min()) if len(a) else float('nan')
    return f"{'same' if same else 'DIFFERENT'} crops and report; ID vectors: min cosine old vs new {cos:.7f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', type=int, default=300, help='number of LFW images')
    p.add_argument('--lfw', default=os.environ.get('ID3PM_LFW'), help='LFW folder (default: $ID3PM_LFW)')
    p.add_argument('--workers', type=int, default=None, help='worker processes of the new path (default: one per core)')
    p.add_argument('--faces', type=int, default=32, help='faces for the per-face descriptor timing (0: skip it)')
    p.add_argument('--child', choices=['old', 'new', 'descriptor'], help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not a.lfw: p.error('pass --lfw or set ID3PM_LFW to the LFW folder')
    if a.child == 'descriptor': print(json.dumps(run_descriptor(a.lfw, a.faces))); return
    if a.child: print(json.dumps(run_path(a.child, a.lfw, a.images, a.out, a.workers))); return

    load = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix='prep_bench_')
    try:
        extra = ['--workers', str(a.workers)] if a.workers else []
        res = {w: child(['--child', w, '--lfw', a.lfw, '--images', str(a.images), '--out', f'{tmp}/{w}', *extra]) for w in ('old', 'new')}
        agree = compare(res['old']['root'], res['new']['root'])
    finally: shutil.rmtree(tmp, ignore_errors=True)
    n = res['old']['files']
    print(f"{n} LFW images, sizes 64+256, dlib detector; {os.cpu_count()} cores, load average {load:.1f} at the start (other jobs share the cores)")
    print(f"{'path':<52}{'img/s':>8}{'CPU s/img':>11}")
    names = {'old': 'old: workers=1, dlib descriptor (dlib)', 'new': f"new: workers={a.workers or os.cpu_count()}, dlib descriptor (torch)"}
    for w, r in res.items(): print(f"{names[w]:<52}{r['files'] / r['secs']:>8.1f}{r['cpu'] / r['files']:>11.3f}")
    speed = res['old']['secs'] / res['new']['secs']; cpu = res['old']['cpu'] / res['new']['cpu']
    print(f"{'ratio new / old':<52}{speed:>7.2f}x{cpu:>10.2f}x   statuses {res['new']['counts']}")
    print(f"on {os.cpu_count()} idle cores the new path would reach about {os.cpu_count() * res['new']['files'] / res['new']['cpu']:.0f} img/s (cores / CPU s per image)")
    print(agree)
    if a.faces:
        d = child(['--child', 'descriptor', '--lfw', a.lfw, '--faces', str(a.faces)])
        row = lambda k: f"{d[k][0]:.1f} ms ({d[k][1]:.1f} ms CPU)"
        print(f"descriptor per face, {d['faces']} LFW chips: dlib {row('dlib')}; torch 1 thread {row('torch_1')}, "
              f"2 threads {row('torch_2')}; min cosine torch vs dlib {d['min_cos']:.7f}")


if __name__ == '__main__': main()
