"""The SR stage as a user trains and uses it: kill -9 during SR training resumes to the same weights as a run that was
never interrupted, and a base bundle with an SR stage attached by `id3pm_train_sr --attach` loads and samples 64 px faces
in a fresh process (`id3pm_sample --sr`).

The data are 24 LFW photos of 8 people prepared with dlib at 32 and 64 px. This file is also the training script of
the kill test (`python test_superres.py CACHE OUT MODE`).
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}
EPOCHS, EVERY = 3, 2


def tiny_preset():
    "The `cpu` recipe at a miniature width."
    from id3pm_nb.model.superres import SRPreset
    return SRPreset('test', {'preset': 'tiny', 'ch': 16, 'head_ch': 16, 'patch': 2}, 32, 64, 4, 2e-3, 0.1, precision='fp32')


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> Path:
    "24 LFW images of 8 people, prepared with dlib at 32 and 64 px."
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.data.dataset import scan_lfw
    lfw = os.environ.get('ID3PM_LFW')
    if not lfw or not Path(lfw).is_dir(): pytest.fail("set ID3PM_LFW to the LFW folder (with lfw-deepfunneled/), e.g. ../shared/data/lfw")
    df = scan_lfw(lfw)
    people = sorted(n for n, c in df.identity.value_counts().items() if c >= 3)[:8]
    df = df[df.identity.isin(people)].sort_values('path').groupby('identity').head(3)
    return prepare(df, out_dir=tmp_path_factory.mktemp('prep'), sizes=(32, 64), progress=False, verbose=False).root


def main(cache: Path, out: Path, mode: str):
    "mode: 'full' (uninterrupted), 'victim' (slow, to be killed), 'resume' (continue the victim's run)."
    from fastai.callback.core import Callback
    from id3pm_nb.core import seed_everything
    from id3pm_nb.data.store import load_prepared
    from id3pm_nb.train.sr import sr_split, sr_train
    from id3pm_nb.train.checkpoint import CheckpointCallback
    from id3pm_nb.train.learner import PreviewCallback

    class Slow(Callback):
        "The victim sleeps at each training batch so that it can be killed mid-run."
        order = 0
        def before_batch(self):
            if self.training: time.sleep(0.3)

    torch.set_num_threads(1); seed_everything(0)
    P = load_prepared(cache)
    run_dir = out/('full' if mode == 'full' else 'run')
    cbs = [CheckpointCallback(run_dir/'ckpt', every=EVERY), PreviewCallback(run_dir/'previews', every=None), *([Slow()] if mode == 'victim' else [])]
    sr_train(P, sr_split(P, valid_pct=0.25), tiny_preset(), run_dir, epochs=EPOCHS, log=lambda m: None, progress=False, cbs=cbs)


def _run(cache: Path, out: Path, mode: str):
    return subprocess.Popen([sys.executable, __file__, str(cache), str(out), mode], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ckpt_iters(folder: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in folder.glob('ckpt-*') if (p/'manifest.json').is_file())


@pytest.fixture(scope='module')
def runs(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp('sr_resume')
    victim, full = _run(cache, out, 'victim'), _run(cache, out, 'full')
    t0 = time.time()
    while max(_ckpt_iters(out/'run'/'ckpt'), default=0) < 2 * EVERY and victim.poll() is None and time.time() - t0 < 600: time.sleep(0.05)
    assert victim.poll() is None, f"the victim finished or crashed before it could be killed:\n{victim.stdout.read()[-3000:]}"
    os.kill(victim.pid, signal.SIGKILL); victim.wait()
    killed_at, exported = _ckpt_iters(out/'run'/'ckpt'), (out/'run'/'bundle').exists()
    assert full.wait(timeout=900) == 0, full.stdout.read()[-3000:]
    resumed = _run(cache, out, 'resume')
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read()[-3000:]
    return out, victim.returncode, killed_at, exported


def test_sr_training_killed_and_resumed(runs):
    from safetensors.torch import load_file
    out, rc, killed_at, exported = runs
    assert rc == -signal.SIGKILL and killed_at and not exported                          # killed mid-run, before its bundle
    full, res = (json.loads((out/d/'bundle'/'bundle.json').read_text()) for d in ('full', 'run'))
    assert res['meta']['fit']['resumed'].endswith(f'ckpt-{killed_at[-1]:08d}') and full['meta']['fit']['resumed'] is None
    assert res['training']['iterations'] == full['training']['iterations'] > killed_at[-1]
    a, b = (load_file(str(out/d/'bundle'/'model.safetensors')) for d in ('full', 'run'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)                 # bit-identical EMA weights
    assert res['training']['final'] == full['training']['final']                              # and the same last losses


def test_attached_bundle_samples_in_a_fresh_process(cache, tmp_path):
    "id3pm_train_sr --attach adds the stage to a base bundle without touching its model; id3pm_sample --sr then writes 64 px faces."
    from id3pm_nb.core import file_hash
    from id3pm_nb.data.dataset import get_dls
    from id3pm_nb.data.store import load_prepared
    from id3pm_nb.train.sr import sr_split
    from id3pm_nb.train.learner import get_learner
    from id3pm_nb.model.bundle import load_bundle, save_bundle
    from id3pm_nb.model.unet import unet_config
    P = load_prepared(cache)
    split = sr_split(P, valid_pct=0.25)
    base = get_learner(get_dls(P, 32, 4, split=split, device='cpu'), unet_config('tiny', image_size=32, id_dim=P.ids.shape[1], ch=16, head_ch=16))
    bdir = save_bundle(tmp_path/'bundle', base, {'recognizer': P.fingerprint})
    h0 = file_hash(bdir/'model.safetensors')
    cmd = lambda *a: subprocess.run([sys.executable, '-m', 'id3pm_nb.cli.train', *map(str, a)], env=ENV, capture_output=True, text=True, timeout=900)
    r = cmd('train_sr', cache, '--attach', bdir, '--out', tmp_path/'sr', '--epochs', 1, '--bs', 4, '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith(str(bdir)) and (tmp_path/'sr'/'bundle'/'bundle.json').is_file()
    b = load_bundle(bdir)
    assert file_hash(bdir/'model.safetensors') == h0 and b.sr.info['kind'] == 'sr' and b.sr.info['low_res_size'] == 32
    assert set(b.sr.info['identities']['train']) | set(b.sr.info['identities']['valid']) <= set(b.info['identities']['train']) | set(b.info['identities']['valid'])
    np.savez(tmp_path/'ids.npz', ids=np.asarray(P.ids)[:2], fingerprint=P.fingerprint)
    r = cmd('sample', bdir, tmp_path/'ids.npz', '--sr', '--n', 2, '--steps', 2, '--out', tmp_path/'smp', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    from PIL import Image
    pngs = sorted((tmp_path/'smp').glob('*/s3_*.png'))
    assert len(pngs) == 4 and all(Image.open(p).size == (64, 64) for p in pngs)


if __name__ == '__main__':
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
