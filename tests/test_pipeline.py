"""ID3PM pipeline checks that need a separate process or the real files: seeded sampling is the same in a fresh process
and independent of the global RNG; bundles damaged on disk in different ways always give a clear error."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LFW = Path(os.environ['ID3PM_LFW'])/'lfw-deepfunneled'
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}

from id3pm_nb.fr.recognizer import load_recognizer
from id3pm_nb.use.pipeline import ID3PM
from id3pm_nb.model.sampling import SamplingSpec
from id3pm_nb.model.bundle import ArtifactError, save_bundle
from id3pm_nb.model.unet import UNet, perturb_zero_init, unet_config

SAMPLE = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from id3pm_nb.use.pipeline import ID3PM
from id3pm_nb.model.sampling import SamplingSpec
p = ID3PM.from_bundle(sys.argv[1], device='cpu')
np.save(sys.argv[3], p.sample(np.load(sys.argv[2]), 2, SamplingSpec(2.5, steps=4), seed=11, progress=False))
"""


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('b')
    model = perturb_zero_init(UNet(unet_config('tiny', image_size=32, ch=16, head_ch=16, id_dim=128)), std=0.05)
    return save_bundle(d/'bundle', model, {'recognizer': load_recognizer('dlib').fingerprint}, train_identities=[])


@pytest.fixture(scope='module')
def ids():
    g = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def test_seeded_sampling_same_in_a_fresh_process(bundle, ids, tmp_path):
    np.save(tmp_path/'ids.npy', ids)
    r = subprocess.run([sys.executable, '-c', SAMPLE, str(bundle), str(tmp_path/'ids.npy'), str(tmp_path/'out.npy')],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    torch.manual_seed(1234); np.random.seed(99)                       # global RNG state must not matter
    here = ID3PM.from_bundle(bundle, device='cpu').sample(ids, 2, SamplingSpec(2.5, steps=4), seed=11, progress=False)
    assert (np.load(tmp_path/'out.npy') == here).all()


def test_every_sampler_is_seeded(bundle, ids):
    "Repeated calls are identical; other batch sizes agree up to float rounding (an occasional uint8 level)."
    p = ID3PM.from_bundle(bundle, device='cpu')
    for sampler in ('ddpm', 'ddim', 'dpmpp_2m'):
        spec = SamplingSpec(sampler=sampler, steps=3)
        a = p.sample(ids[:1], 2, spec, seed=4, progress=False)
        assert (a == p.sample(ids[:1], 2, spec, seed=4, progress=False)).all(), sampler
        d = np.abs(a.astype(int) - p.sample(ids[:1], 2, spec, seed=4, progress=False, bs=1).astype(int))
        assert d.mean() < 0.05 and d.max() <= 3, (sampler, d.mean(), d.max())
        assert (a != p.sample(ids[:1], 2, spec, seed=5, progress=False)).any(), sampler
    sde = SamplingSpec(sampler='ddim', steps=3).replace(eta=1.0)                          # stochastic DDIM: seeded too
    e = p.sample(ids[:1], 1, sde, seed=4, progress=False)
    assert (e == p.sample(ids[:1], 1, sde, seed=4, progress=False)).all()


@pytest.mark.parametrize('damage,message', [
    (lambda d: (d/'model.safetensors').unlink(), 'model.safetensors is missing'),
    (lambda d: (d/'model.safetensors').write_bytes(b''), 'model.safetensors is corrupt'),
    (lambda d: (d/'config.json').write_text('{"__class__": "UNetConfig", "image_size": "big"}'), 'config.json is corrupt'),
    (lambda d: (d/'bundle.json').write_text('[]'), "format 'list'"),
    (lambda d: (d/'bundle.json').unlink(), 'bundle.json is missing'),
    (lambda d: shutil.rmtree(d), 'does not exist'),
])
def test_damaged_bundle_clear_error(bundle, tmp_path, damage, message):
    d = tmp_path/'copy'; shutil.copytree(bundle, d)
    damage(d)
    with pytest.raises((ArtifactError, FileNotFoundError)) as e: ID3PM.from_bundle(d)
    assert message in str(e.value), str(e.value)


def test_foreign_weights_clear_error(bundle, tmp_path):
    "A config that does not match the weights (checksums skipped) fails before torch sees mismatched tensors."
    d = tmp_path/'copy'; shutil.copytree(bundle, d)
    cfg = json.loads((d/'config.json').read_text()); cfg['ch'] = 32; cfg['head_ch'] = 32
    (d/'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match='do not fit this UNet'): ID3PM.from_bundle(d, verify=False)


def test_sr_bundle_is_not_a_base_model(bundle, tmp_path):
    from id3pm_nb.model.unet import SRUNet, sr_config
    d = save_bundle(tmp_path/'sr', SRUNet(sr_config('tiny', id_dim=128)), {'recognizer': 'x'}, train_identities=[])
    with pytest.raises(ArtifactError, match='super-resolution stage, not a base model'): ID3PM.from_bundle(d)
