"""Throughput of id3pm_nb's UNet vs diffusers' UNet2DModel at a matched configuration, measured side by side, and of
the same UNet with the opt-in CPU kernels (`model.cpu.cpu_kernels`: GroupNorm fused with AdaGN in bf16, int16 dropout
masks) against it without them.

Training step (forward + backward + AdamW step) and inference (forward under inference_mode), in samples/s, fp32 and
bf16 autocast. Both models: same channels, res blocks, attention resolutions and head size, scale-shift norm,
BigGAN-style residual up/down sampling, and the ID vector projected by a linear layer and added to the time embedding
(diffusers: class_embed_type='identity' fed with that projection).

    python bench/unet.py                          # 'small' preset on CPU, batch 16 (a few minutes on 2 cores)
    python bench/unet.py --preset tiny --batch 8 --no-diffusers   # the CPU kernels' ratio alone, quickly
    python bench/unet.py --preset paper --device cuda --batch 64
"""
from __future__ import annotations
import argparse, copy, time

import torch
import torch.nn.functional as F
from torch import nn

from id3pm_nb.model.cpu import cpu_kernels
from id3pm_nb.model.unet import UNet, UNetConfig, num_params, unet_config


class DiffusersID(nn.Module):
    "diffusers' UNet2DModel matched to `cfg`, with the ID vector projected and added to its time embedding."
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        from diffusers import UNet2DModel
        sizes = [cfg.image_size // 2**i for i in range(len(cfg.ch_mult))]
        attn = [s in cfg.attn_res for s in sizes]
        if cfg.num_heads is not None: raise ValueError('the diffusers match needs head_ch (channels per head), not num_heads')
        self.unet = UNet2DModel(
            sample_size=cfg.image_size, in_channels=cfg.in_ch, out_channels=cfg.out_channels,
            block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult), layers_per_block=cfg.num_res_blocks,
            down_block_types=tuple('AttnDownBlock2D' if a else 'ResnetDownsampleBlock2D' for a in attn),
            up_block_types=tuple('AttnUpBlock2D' if a else 'ResnetUpsampleBlock2D' for a in reversed(attn)),
            downsample_type='resnet', upsample_type='resnet', dropout=cfg.dropout, attention_head_dim=cfg.head_ch,
            norm_num_groups=cfg.norm_groups, resnet_time_scale_shift='scale_shift', class_embed_type='identity')
        self.id_proj = nn.Linear(cfg.id_dim, cfg.emb_ch)

    def forward(self, x, t, y): return self.unet(x, t, class_labels=self.id_proj(y), return_dict=False)[0]


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def make_step(model, x, t, y, train: bool, dtype):
    "A closure running one training step or one inference forward."
    ac = (lambda: torch.autocast(x.device.type, dtype)) if dtype else (lambda: torch.autocast(x.device.type, enabled=False))
    if train:
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        target = torch.randn_like(x)
        def step():
            with ac(): loss = F.mse_loss(model(x, t, y).float(), target)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    else:
        def step():
            with torch.inference_mode(), ac(): model(x, t, y)
    return step


def bench(models: dict, x, t, y, train: bool, dtype, rounds: int, iters: int) -> dict:
    "Best-of-rounds seconds per call of each model; rounds interleaved so that load changes hit all models alike."
    steps = {}
    for k, m in models.items():
        m.train(train)
        steps[k] = make_step(m, x, t, y, train, dtype)
        for _ in range(2): steps[k]()                           # warm-up (allocator, oneDNN primitives, compile)
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, s in steps.items():
            sync(x.device); t0 = time.perf_counter()
            for _ in range(iters): s()
            sync(x.device); times[k].append((time.perf_counter() - t0) / iters)
    return {k: min(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', default='small', help="unet_config preset: tiny, small or paper")
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--iters', type=int, default=2)
    p.add_argument('--dtypes', default='fp32,bf16')
    p.add_argument('--modes', default='train,infer')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: leave the default)')
    p.add_argument('--compile', action='store_true', help='also time torch.compile(ours)')
    p.add_argument('--diffusers-cl', action='store_true', help='also time diffusers converted to channels_last')
    p.add_argument('--no-diffusers', action='store_true', help="time ours with and without the CPU kernels only")
    a = p.parse_args()
    dev = torch.device(a.device)
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = unet_config(a.preset)
    ours = UNet(cfg).to(dev)
    models = {'ours': ours, 'ours_cpu': cpu_kernels(copy.deepcopy(ours))}   # the same weights, the CPU kernels
    print(f"preset={a.preset} image={cfg.image_size} ch={cfg.ch} mult={cfg.ch_mult} blocks={cfg.num_res_blocks} "
          f"attn={cfg.attn_res} head_ch={cfg.head_ch} dropout={cfg.dropout} batch={a.batch} device={dev} "
          f"threads={torch.get_num_threads()}")
    if not a.no_diffusers:
        models['diffusers'] = DiffusersID(cfg).to(dev)
        print(f"parameters: ours {num_params(ours)/1e6:.2f}M, diffusers {num_params(models['diffusers'])/1e6:.2f}M")
    if a.diffusers_cl: models['diffusers_cl'] = DiffusersID(cfg).to(dev).to(memory_format=torch.channels_last)
    if a.compile: models['ours_compiled'] = torch.compile(UNet(cfg).to(dev))
    x = torch.randn(a.batch, cfg.in_ch, cfg.image_size, cfg.image_size, device=dev)
    t = torch.randint(0, 1000, (a.batch,), device=dev)
    y = F.normalize(torch.randn(a.batch, cfg.id_dim, device=dev), dim=1)
    for mode in a.modes.split(','):
        for dn in a.dtypes.split(','):
            dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[dn]
            res = bench(models, x, t, y, mode == 'train', dtype, a.rounds, a.iters)
            row = '  '.join(f"{k} {a.batch / s:7.1f}/s" for k, s in res.items())
            ratios = [f"cpu kernels {res['ours'] / res['ours_cpu']:.2f}x"]
            if 'diffusers' in res:
                ratios += [f"{k}/diffusers {res['diffusers'] / s:.2f}x" for k, s in res.items() if k != 'diffusers']
            print(f"{mode:5s} {dn}: {row}   |  {'  '.join(ratios)}", flush=True)


if __name__ == '__main__': main()
