"""Cross-check: id3pm_nb's ADM U-Net computes the same function as diffusers' UNet2DModel at the matched configuration.

Weights are copied from ours into diffusers (scale-shift norm, residual up/down sampling, attention heads of `head_ch`
channels, the ID projection added to the time embedding) and both outputs are compared. diffusers' middle-block
attention has no group norm when resnet_time_scale_shift='scale_shift', so ours is given an identity there.
"""
import copy, sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'bench'))
from unet import DiffusersID  # bench/unet.py: the matched diffusers model

from id3pm_nb.model.cpu import cpu_kernels
from id3pm_nb.model.unet import UNet, perturb_zero_init, unet_config


def _res(dst: dict, pre: str, rb):
    "Parameters of our ResBlock under diffusers' ResnetBlock2D names."
    for ours, theirs in [('norm1', 'norm1'), ('conv1', 'conv1'), ('emb', 'time_emb_proj'), ('norm2', 'norm2'),
                         ('conv2', 'conv2'), ('skip', 'conv_shortcut')]:
        for k, v in getattr(rb, ours).state_dict().items(): dst[f'{pre}.{theirs}.{k}'] = v


def _attn(dst: dict, pre: str, ab, norm: bool = True):
    "Parameters of our AttnBlock under diffusers' Attention names (qkv split into to_q, to_k, to_v)."
    if norm: dst[f'{pre}.group_norm.weight'], dst[f'{pre}.group_norm.bias'] = ab.norm.weight, ab.norm.bias
    for n, w, b in zip(['to_q', 'to_k', 'to_v'], ab.qkv.weight.chunk(3), ab.qkv.bias.chunk(3)):
        dst[f'{pre}.{n}.weight'], dst[f'{pre}.{n}.bias'] = w, b
    dst[f'{pre}.to_out.0.weight'], dst[f'{pre}.to_out.0.bias'] = ab.proj.weight, ab.proj.bias


def to_diffusers(m: UNet) -> dict:
    "Our UNet's weights as a state dict for `DiffusersID` of the same config."
    cfg, d = m.cfg, {}
    d['unet.conv_in.weight'], d['unet.conv_in.bias'] = m.conv_in.weight, m.conv_in.bias
    for i, j in [(0, 'linear_1'), (2, 'linear_2')]:
        d[f'unet.time_embedding.{j}.weight'], d[f'unet.time_embedding.{j}.bias'] = m.time_embed[i].weight, m.time_embed[i].bias
    d['id_proj.weight'], d['id_proj.bias'] = m.id_proj.weight, m.id_proj.bias
    stages, L = iter(m.down), len(cfg.ch_mult)
    for i in range(L):
        for j in range(cfg.num_res_blocks):
            st = next(stages); _res(d, f'unet.down_blocks.{i}.resnets.{j}', st[0])
            if len(st) > 1: _attn(d, f'unet.down_blocks.{i}.attentions.{j}', st[1])
        if i < L - 1: _res(d, f'unet.down_blocks.{i}.downsamplers.0', next(stages)[0])
    _res(d, 'unet.mid_block.resnets.0', m.mid[0]); _attn(d, 'unet.mid_block.attentions.0', m.mid[1], norm=False)
    _res(d, 'unet.mid_block.resnets.1', m.mid[2])
    stages = iter(m.up)
    for i in range(L):
        for j in range(cfg.num_res_blocks + 1):
            st = list(next(stages)); _res(d, f'unet.up_blocks.{i}.resnets.{j}', st.pop(0))
            if i < L - 1 and j == cfg.num_res_blocks: _res(d, f'unet.up_blocks.{i}.upsamplers.0', st.pop())
            if st: _attn(d, f'unet.up_blocks.{i}.attentions.{j}', st[0])
    d['unet.conv_norm_out.weight'], d['unet.conv_norm_out.bias'] = m.out[0].weight, m.out[0].bias
    d['unet.conv_out.weight'], d['unet.conv_out.bias'] = m.out[1].weight, m.out[1].bias
    return {k: v.detach().contiguous() for k, v in d.items()}


@pytest.mark.parametrize('preset,over', [('tiny', dict(learn_sigma=True)), ('small', dict(ch_mult=(1, 2, 3), image_size=16))])
def test_matches_diffusers(preset, over):
    torch.manual_seed(0)
    cfg = unet_config(preset, id_dim=32, **over)
    ours = perturb_zero_init(UNet(cfg), std=0.05).eval()
    ours.mid[1].norm = nn.Identity()                     # diffusers' mid attention has no norm under scale_shift
    theirs = DiffusersID(cfg).eval()
    sd = to_diffusers(ours)
    assert set(sd) == set(theirs.state_dict()), set(sd) ^ set(theirs.state_dict())
    theirs.load_state_dict(sd)
    B, S = 3, cfg.image_size
    x, t, y = torch.randn(B, 3, S, S), torch.tensor([0., 17., 999.]), torch.randn(B, 32)
    with torch.no_grad():
        a, b = ours(x, t, y), theirs(x, t, y)
    assert a.shape == b.shape == (B, cfg.out_channels, S, S)
    assert a.abs().max() > 1e-2                           # a non-trivial function
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    fused = cpu_kernels(copy.deepcopy(ours))            # the opt-in CPU kernels (fused bf16 group norm) as well
    with torch.no_grad(): torch.testing.assert_close(fused(x, t, y), a, atol=0, rtol=0)   # fp32: the same kernels
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        a16, f16, b16 = ours(x, t, y).float(), fused(x, t, y).float(), theirs(x, t, y).float()
    for o16, o in [(a16, a), (f16, a), (b16, b)]: assert (o16 - o).abs().max() < 0.05 * o.abs().max()
