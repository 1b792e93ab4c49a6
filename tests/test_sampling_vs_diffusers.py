"""Cross-check id3pm_nb's schedules and samplers against diffusers' schedulers (diffusers is a test-only dependency).

The same deterministic model, starting noise, steps and per-step noise go through our sampler and through the
diffusers scheduler's `step` loop; the trajectories (x before every step, the predicted x0, the final sample) must agree
to float32 tolerance. Timestep conventions used (see `respace` in 03b_diffusion):
  ours `respace(s, n)` (int)        == diffusers `timestep_spacing="linspace"` for DDPMScheduler / DDIMScheduler
  ours `respace(s, "ddimN")`        == `"leading"` with `steps_offset=0` (N divides T)
  ours `respace(s, "trailingN")`    == `"trailing"`
  DPMSolverMultistepScheduler's "linspace" drops t=0 from N+1 points: we pass its timesteps as an explicit list.
Run with `pytest -s` to see the max abs differences.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from id3pm_nb.model.diffusion import Schedule, get_schedule, respace
from id3pm_nb.model.sampling import sample_ddim, sample_ddpm, sample_dpmpp_2m

T = 1000
DIFFUSERS_NAME = {'linear': 'linear', 'cosine': 'squaredcos_cap_v2'}
SHAPE = (2, 3, 8, 8)


class ToyEps(nn.Module):
    "Fixed deterministic eps(x, t): the exact eps of N(0, 0.5²) data plus a small nonlinear conv term (and v if asked)."
    def __init__(self, sched: Schedule, learn_sigma: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ac = sched.alphas_cumprod.float()
        self.conv = nn.Conv2d(3, 6 if learn_sigma else 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g) * 0.1)
        self.learn_sigma = learn_sigma

    @torch.no_grad()
    def forward(self, x, t):
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        a = self.ac[t.long()].view(-1, 1, 1, 1)
        h = self.conv(x) + torch.sin(t.float() / 150).view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * x / (0.25 * a + 1 - a) + 0.05 * torch.tanh(h[:, :3])
        return torch.cat([eps, torch.tanh(h[:, 3:])], 1) if self.learn_sigma else eps


def _ours(fn, model, sched, x, **kw):
    "Run one of our samplers; return (xs before each step, denoised per step, final)."
    xs, x0s = [], []
    def cb(d): xs.append(d['x'].clone()); x0s.append(d['denoised'].clone())
    out = fn(model, x.clone(), sched, callback=cb, disable=True, **kw)
    return torch.stack(xs), torch.stack(x0s), out


def _theirs(sch, model, x, step_kw=lambda i: {}, x0_of=lambda res, sch: res.pred_original_sample):
    "Run a diffusers scheduler's step loop; same triple as `_ours`."
    xs, x0s = [], []
    for i, t in enumerate(sch.timesteps):
        xs.append(x.clone())
        res = sch.step(model(x, t), t, x, **step_kw(i))
        x0s.append(x0_of(res, sch).clone()); x = res.prev_sample
    return torch.stack(xs), torch.stack(x0s), x


def _diff(name, a, b, rel=False):
    "Max abs difference of two trajectories (relative to max(1, |b|) if `rel`), printed for the record."
    d = (a - b).abs().max().item()
    scale = max(1., b.abs().max().item()) if rel else 1.
    print(f"{name}: max abs diff {d:.2e}" + (f" (values up to {scale:.3g}: rel {d / scale:.2e})" if rel else ''))
    d /= scale
    return d


def _check(name, ours, theirs, tol=2e-4):
    """Trajectories agree to `tol`, relative to max(1, max |value|) (x_t reaches ~25 and x0 ~1e3 near t = T with cosine).

    The default 2e-4 covers diffusers' float32 alpha-bars (1.3e-5 relative off ours for cosine, amplified by 1/sqrt(abar)
    near t = T); `test_samplers_exact_with_diffusers_alphas` shows the sampler math alone agrees to 1e-5."""
    (xa, x0a, oa), (xb, x0b, ob) = ours, theirs
    assert xa.shape == xb.shape, f"{name}: {len(xa)} steps vs diffusers {len(xb)}"
    assert _diff(f"{name} x_t trajectory", xa, xb, rel=True) < tol
    assert _diff(f"{name} predicted x0", x0a, x0b, rel=True) < tol
    assert _diff(f"{name} final sample", oa, ob, rel=True) < tol


def noise(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize('name', ['linear', 'cosine'])
def test_schedules_match(name):
    ours, theirs = get_schedule(name, T), DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name])
    db = _diff(f"{name} betas", ours.betas, theirs.betas.double())
    dac = (ours.alphas_cumprod / theirs.alphas_cumprod.double() - 1).abs().max().item()
    print(f"{name} alphas_cumprod: max rel diff {dac:.2e} (diffusers accumulates the product in float32)")
    assert db < 1e-7 and dac < 1e-4


@pytest.mark.parametrize('spacing,steps,n', [('linspace', 250, 250), ('linspace', 30, 30), ('leading', 'ddim50', 50),
                                             ('trailing', 'trailing25', 25), ('trailing', 'trailing30', 30),
                                             ('linspace', 1000, 1000)])
def test_respacing_conventions(spacing, steps, n):
    sch = DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=0)
    sch.set_timesteps(n)
    assert respace(get_schedule('linear', T), steps).timesteps.flip(0).tolist() == sch.timesteps.tolist()


# --------------------------------------------------------------------------------------------------------------- DDPM
@pytest.mark.parametrize('name,steps,variance,clip', [('linear', 1000, 'fixed_small', False),
                                                      ('cosine', 250, 'fixed_small', False),
                                                      ('cosine', 250, 'learned_range', False),
                                                      ('linear', 50, 'fixed_small', True)])
def test_ddpm_matches(name, steps, variance, clip):
    sched = get_schedule(name, T)
    model = ToyEps(sched, learn_sigma=variance == 'learned_range')
    sch = DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], variance_type=variance,
                        clip_sample=clip, timestep_spacing='linspace')
    sch.set_timesteps(steps)
    # both draw the per-step noise from identically seeded CPU generators, in the same order (only for t > 0)
    ours = _ours(sample_ddpm, model, respace(sched, steps), noise(), generator=torch.Generator().manual_seed(1), clip_x0=clip)
    g = torch.Generator().manual_seed(1)
    theirs = _theirs(sch, model, noise(), step_kw=lambda i: {'generator': g})
    _check(f"DDPM-{steps} {name} {variance}{' clip' if clip else ''}", ours, theirs)


# --------------------------------------------------------------------------------------------------------------- DDIM
@pytest.mark.parametrize('name,steps,spacing,eta,clip', [('linear', 'ddim50', 'leading', 0., False),
                                                         ('cosine', 'trailing50', 'trailing', 0., False),
                                                         ('cosine', 'ddim20', 'leading', 0.5, False),
                                                         ('linear', 'trailing25', 'trailing', 1.0, True)])
def test_ddim_matches(name, steps, spacing, eta, clip):
    sched = respace(get_schedule(name, T), steps)
    model = ToyEps(get_schedule(name, T))
    sch = DDIMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], timestep_spacing=spacing,
                        steps_offset=0, set_alpha_to_one=True, clip_sample=clip)
    sch.set_timesteps(len(sched))
    zs = [noise(100 + i) for i in range(len(sched))]  # shared per-step noise
    it = iter(zs)
    ours = _ours(sample_ddim, model, sched, noise(), eta=eta, clip_x0=clip, noise_sampler=lambda x: next(it))
    theirs = _theirs(sch, model, noise(), step_kw=lambda i: {'eta': eta, 'use_clipped_model_output': clip,
                                                             **({'variance_noise': zs[i]} if eta > 0 else {})})
    _check(f"DDIM {steps} {name} eta={eta}{' clip' if clip else ''}", ours, theirs)


# ------------------------------------------------------------------------- DPM-Solver++(2M), ODE (eta = 0) and SDE (eta = 1)
@pytest.mark.parametrize('name,n,spacing,eta', [('linear', 20, 'linspace', 0.), ('cosine', 25, 'trailing', 0.),
                                                ('cosine', 20, 'linspace', 0.), ('linear', 10, 'trailing', 0.),
                                                ('cosine', 25, 'trailing', 1.), ('linear', 20, 'linspace', 1.), ('cosine', 10, 'trailing', 1.)])
def test_dpmpp_2m_matches(name, n, spacing, eta):
    sch = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name],
                                      algorithm_type='sde-dpmsolver++' if eta else 'dpmsolver++', solver_order=2, solver_type='midpoint',
                                      lower_order_final=True, final_sigmas_type='zero', timestep_spacing=spacing)
    sch.set_timesteps(n)
    steps = f'trailing{n}' if spacing == 'trailing' else sch.timesteps.tolist()
    sched = respace(get_schedule(name, T), steps)
    assert sched.timesteps.flip(0).tolist() == sch.timesteps.tolist()
    model = ToyEps(get_schedule(name, T))
    zs = [noise(200 + i) for i in range(n)]  # shared per-step noise of the SDE (ours draws none at the last step, to sigma = 0)
    it = iter(zs)
    ours = _ours(sample_dpmpp_2m, model, sched, noise(), eta=eta, noise_sampler=lambda x: next(it))
    theirs = _theirs(sch, model, noise(), step_kw=lambda i: {'variance_noise': zs[i]} if eta else {},
                     x0_of=lambda res, sch: sch.model_outputs[-1])  # its stored x0 prediction
    _check(f"DPM-Solver++(2M){' SDE' if eta else ''}-{n} {name} {spacing}", ours, theirs)


# ------------------------------------------------------------------------- sampler math alone (diffusers' own alphas)
@pytest.mark.parametrize('which', ['ddpm', 'ddim', 'dpmpp_2m'])
def test_samplers_exact_with_diffusers_alphas(which):
    """Our Schedule built from diffusers' float32 alpha-bars, and diffusers' DDPM/DDIM arithmetic run in float64.

    What is left is our own float32 rounding: diffusers in float32 loses ~1e-4 relative at small t, where it forms
    1 - abar_t/abar_{t-1} and the posterior variance in float32 (we take all coefficients from the float64 schedule).
    DPM-Solver++ keeps diffusers' float32 sigmas (its step casts to float32)."""
    kw = dict(num_train_timesteps=T, beta_schedule='squaredcos_cap_v2')
    sch, fn, steps = {'ddpm': (DDPMScheduler(**kw, clip_sample=False, timestep_spacing='linspace'), sample_ddpm, 250),
                      'ddim': (DDIMScheduler(**kw, clip_sample=False, timestep_spacing='trailing'), sample_ddim, 'trailing50'),
                      'dpmpp_2m': (DPMSolverMultistepScheduler(**kw, algorithm_type='dpmsolver++', solver_order=2,
                                   final_sigmas_type='zero', timestep_spacing='trailing'), sample_dpmpp_2m, 'trailing25')}[which]
    sched = respace(Schedule(sch.betas, alphas_cumprod=sch.alphas_cumprod), steps)
    sch.set_timesteps(len(sched))
    model, dt = ToyEps(get_schedule('cosine', T)), torch.float32
    if which != 'dpmpp_2m':  # diffusers' DDPM/DDIM in float64
        sch.alphas_cumprod, dt = sch.alphas_cumprod.double(), torch.float64
        sch.one = sch.final_alpha_cumprod = torch.tensor(1., dtype=dt)
    g = torch.Generator().manual_seed(1)
    ours = _ours(fn, model, sched, noise(), generator=torch.Generator().manual_seed(1))
    theirs = _theirs(sch, lambda x, t: model(x.float(), t).to(dt), noise().to(dt),
                     step_kw=lambda i: {'generator': g} if which == 'ddpm' else {},
                     x0_of=(lambda res, sch: sch.model_outputs[-1]) if which == 'dpmpp_2m' else (lambda res, sch: res.pred_original_sample))
    if which == 'ddpm':  # diffusers draws float64 noise from the generator: regenerate ours the same way
        g2 = torch.Generator().manual_seed(1)
        ours = _ours(fn, model, sched, noise(), noise_sampler=lambda x: torch.randn(x.shape, generator=g2, dtype=dt).float())
    _check(f"{which} {steps} cosine, diffusers alphas ({'float64' if dt == torch.float64 else 'float32'} diffusers)", ours, tuple(v.float() for v in theirs), tol=2e-5)
