"""Sampler benchmark: 16 guided images at 64x64 with the real U-Net; NFE, wall time, peak memory, ratios vs DDPM-1000.

Usage (from the repo root):
  python bench/sampling.py                                    # CPU: untrained 'tiny' U-Net at 64x64 (a few minutes)
  python bench/sampling.py --full                             # run every DDPM step on CPU too (~25 min)
  python bench/sampling.py --preset paper --device cuda --precision bf16   # GPU run; every loop runs in full
  python bench/sampling.py --bundle DIR --ids ids.npy --recognizer dlib   # trained model: adds the identity score

Every sampler uses classifier-free guidance (one forward of the doubled batch, 32 rows, per network evaluation).
Ratios are measured side by side in this one run. On CPU (without --full) the two DDPM runs are timed over their
first `--subset` steps (from t = 999 down) and their wall time is extrapolated linearly to all steps (every step costs
one guided forward of the same batch); the table marks those rows. DDIM and DPM-Solver++ always run in full, so the
ms/NFE column cross-checks the extrapolation.
On CPU the table also gives process CPU time (all threads), which is steadier than wall time on a shared machine.
Peak memory: CUDA torch.cuda.max_memory_allocated; CPU the peak resident set size (RSS, polled every 2 ms) above the
RSS before the run (tracemalloc cannot see torch's allocations).
"""
from __future__ import annotations
import os, threading, time
from pathlib import Path

import numpy as np
import torch
from fastcore.script import call_parse, Param, store_true

from id3pm_nb.core import autocast_dtype, default_device
from id3pm_nb.model.diffusion import respace
from id3pm_nb.model.sampling import NFECounter, SamplingSpec, sample, sampling_schedule
from id3pm_nb.model.unet import UNet, perturb_zero_init, unet_config
from id3pm_nb.model.bundle import load_bundle

RUNS = [('DDPM-1000', 'ddpm', 1000), ('DDPM-250', 'ddpm', 250), ('DDIM-50', 'ddim', 50),
        ('DPM-Solver++-25', 'dpmpp_2m', 25), ('DPM-Solver++-20', 'dpmpp_2m', 20)]


def _rss() -> int:
    "Resident set size of this process in bytes (Linux /proc; 0 elsewhere)."
    try: return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError): return 0


class PeakMemory:
    "Context manager: peak memory of the block, in bytes (CUDA allocator peak, or CPU RSS above the starting RSS)."
    def __init__(self, device: torch.device): self.device, self.peak = device, 0
    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device); torch.cuda.reset_peak_memory_stats(self.device)
            self.base = 0
        else:
            self.base, self.top, self._stop = _rss(), _rss(), threading.Event()
            def poll():
                while not self._stop.wait(0.002): self.top = max(self.top, _rss())
            self._t = threading.Thread(target=poll, daemon=True); self._t.start()
        return self
    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device); self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set(); self._t.join(); self.peak = max(self.top, _rss()) - self.base


def build_model(preset: str, bundle: str | None, device: torch.device) -> UNet:
    "The trained U-Net of the bundle folder `bundle` (a save_bundle or id3pm_train folder), else an untrained `preset` U-Net at 64x64."
    if bundle: return load_bundle(bundle, device).model
    overrides = {'paper': {}, 'small': dict(image_size=64, ch_mult=(1, 2, 2, 2)),
                 'tiny': dict(image_size=64, ch_mult=(1, 2, 2))}  # the 32x32 CPU presets, one level deeper for 64x64
    if preset not in overrides: raise ValueError(f"unknown preset {preset!r}: use one of {list(overrides)}")
    model = perturb_zero_init(UNet(unet_config(preset, **overrides[preset])))  # non-zero output layers: real arithmetic
    return model.to(device).eval()


def target_ids(ids: str | None, n: int, dim: int, seed: int) -> torch.Tensor:
    "`n` ID vectors: rows of the .npy file `ids` (cycled), else random unit vectors (timing only)."
    if ids is None:
        v = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
        return v / v.norm(dim=1, keepdim=True)
    p = Path(ids)
    if not p.exists(): raise FileNotFoundError(f"--ids {p} does not exist: save the target ID vectors (N, {dim}) with np.save")
    a = np.load(p)
    if a.ndim != 2 or a.shape[1] != dim: raise ValueError(f"--ids {p} holds an array {a.shape}; the model expects (N, {dim}) ID vectors")
    return torch.from_numpy(a[np.arange(n) % len(a)]).float()


def identity_score(images: torch.Tensor, ids: torch.Tensor, recognizer) -> float:
    "Mean cosine similarity between the recognizer's ID vectors of `images` (aligned, [-1, 1]) and the targets."
    from id3pm_nb.fr.recognizer import cosine
    return float(cosine(recognizer.embed_images(images.cpu(), progress=False), ids.numpy()).mean())


def run_one(model, sampler: str, steps: int, noise: torch.Tensor, ids: torch.Tensor, scale: float, precision: str,
            subset: int | None, seed: int) -> dict:
    "Time one guided sampling run; `subset` limits the walk to the first `subset` steps (t = T-1 down)."
    sched = sampling_schedule(sampler, steps, 'cosine')
    if subset: sched = respace(sched, list(range(len(sched) - subset, len(sched))))
    counter = NFECounter(model)
    dev = noise.device
    with PeakMemory(dev) as mem:
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        spec = SamplingSpec(scale, sampler, None, temperature=1., precision=precision)   # steps: `sched` is respaced already
        out = sample(counter, noise, ids, spec, schedule=sched, noise=torch.Generator(dev).manual_seed(seed),
                     disable=True)  # noise drawn on the device
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dict(out=out, nfe=counter.nfe, rows=counter.rows, wall=wall, cpu=cpu, mem=mem.peak)


@call_parse
def main(preset: Param("U-Net preset for an untrained model: tiny, small or paper", str) = 'tiny',
         device: Param("cpu, cuda, ... (default: cuda if available)", str) = None,
         precision: Param("fp32, bf16, fp16 or auto (autocast for the network)", str) = 'fp32',
         n: Param("images per run", int) = 16,
         scale: Param("identity guidance scale", float) = 3.0,
         full: Param("run every DDPM step even on CPU", store_true) = False,
         subset: Param("CPU without --full: DDPM steps actually timed per DDPM run (wall time extrapolated)", int) = 25,
         bundle: Param("an inference bundle folder (written by save_bundle or id3pm_train)", str) = None,
         ids: Param(".npy of target ID vectors (N, id_dim) for the identity score", str) = None,
         recognizer: Param("face recognizer for the identity score (id3pm_nb.fr.recognizer.load_recognizer spec)", str) = 'dlib',
         threads: Param("torch CPU threads (default: torch's choice)", int) = None,
         seed: Param("seed for noise and ID vectors", int) = 0):
    "Benchmark the guided samplers on one model and print a table of NFE, time, memory and ratios vs DDPM-1000."
    dev = default_device(device)
    if threads: torch.set_num_threads(threads)
    autocast_dtype(dev, precision)  # validates `precision` early
    model = build_model(preset, bundle, dev)
    cfg = model.cfg
    if cfg.id_dim is None: raise ValueError("this U-Net has no ID conditioning (id_dim=None); the benchmark samples with identity guidance")
    if bundle and ids is None:
        raise SystemExit("--bundle needs --ids: a .npy of the target ID vectors to score the samples against")
    ids_t = target_ids(ids, n, cfg.id_dim, seed).to(dev)
    noise = torch.randn(n, cfg.in_ch, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(seed)).to(dev)
    rec = None
    if bundle:
        from id3pm_nb.fr.recognizer import load_recognizer
        rec = load_recognizer(recognizer)

    torch.set_grad_enabled(False)
    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"precision {precision}, model: {'bundle ' + bundle if bundle else f'untrained {preset!r} U-Net'} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, {cfg.image_size}x{cfg.image_size}), "
          f"{n} images, guidance scale {scale}")
    run_one(model, 'ddim', 2, noise, ids_t, scale, precision, None, seed)  # warm-up (allocator, kernels, threads)

    subset = None if (full or dev.type == 'cuda') else subset
    rows = []
    for name, sampler, steps in RUNS:
        sub = subset if (sampler == 'ddpm' and subset and subset < steps) else None
        r = run_one(model, sampler, steps, noise, ids_t, scale, precision, sub, seed)
        per, k = r['wall'] / r['nfe'], steps / r['nfe']  # k > 1: timed a subset, extrapolate linearly
        r.update(name=name, per=per, nfe_full=steps, wall_full=r['wall'] * k, cpu_full=r['cpu'] * k,
                 note=f"timed {sub}/{steps} steps, extrapolated" if sub else '')
        r['id'] = identity_score(r['out'], ids_t, rec) if rec is not None and not sub else None
        rows.append(r)
        print(f"  {name}: {r['nfe']} NFE in {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU{' (' + r['note'] + ')' if sub else ''}", flush=True)

    base, cpu_col = rows[0], dev.type == 'cpu'
    print(f"\n{'sampler':<17}{'NFE':>6}{'rows/NFE':>9}{'wall s':>10}{'ms/NFE':>8}" + (f"{'CPU s':>10}" if cpu_col else '') +
          f"{'peak MB':>9}{'NFE x fewer':>12}{'speed-up':>9}" + (f"{'CPU x less':>11}" if cpu_col else '') + f"{'ID score':>9}  note")
    for r in rows:
        ident = f"{r['id']:.4f}" if r['id'] is not None else 'n/a'
        print(f"{r['name']:<17}{r['nfe_full']:>6}{r['rows'] / r['nfe']:>9.0f}{r['wall_full']:>10.2f}{1e3 * r['per']:>8.1f}" +
              (f"{r['cpu_full']:>10.2f}" if cpu_col else '') +
              f"{r['mem'] / 2**20:>9.0f}{base['nfe_full'] / r['nfe_full']:>12.1f}{base['wall_full'] / r['wall_full']:>9.1f}" +
              (f"{base['cpu_full'] / r['cpu_full']:>11.1f}" if cpu_col else '') + f"{ident:>9}  {r['note']}")
    if cpu_col: print("CPU s = process CPU time (all threads): steadier than wall time on a shared machine.")
    if rec is None:
        print("\nidentity score: n/a (untrained network). Pass --bundle DIR --ids ids.npy [--recognizer NAME] to add it; "
              "the target is DPM-Solver++-20 within 0.02 of DDPM-1000 at >= 50x fewer NFE.")
    else:
        fast = [r for r in rows if r['name'].startswith('DPM') and r['id'] is not None]
        ref = rows[0]['id']
        if ref is None: print("\nDDPM-1000 ran over a subset of its steps, so it has no identity score: use --full (or CUDA) to compare.")
        for r in fast if ref is not None else []:
            print(f"{r['name']}: identity score {r['id']:.4f} vs DDPM-1000 {ref:.4f} (diff {r['id'] - ref:+.4f}, "
                  f"{base['nfe_full'] / r['nfe_full']:.0f}x fewer NFE)")
