"""Kill a training process with SIGKILL after a checkpoint, resume it in a new process, and compare with a run that was
never interrupted: on CPU the final weights must be bit-identical.

The run uses model dropout (global torch RNG), a data augmentation drawing from Python's and NumPy's RNGs, a shuffled
DataLoader, ID dropout, EMA, one-cycle LR and previews, so every piece of state that a resume must restore matters.
This file is also the training script (`python test_resume.py OUT MODE`).
"""
import json, os, random, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

N_TRAIN, N_VALID, BS, SIZE, DIM, EPOCHS, EVERY = 20, 8, 4, 16, 8, 3, 3  # 5 batches per epoch, 15 iterations


class Faces(torch.utils.data.Dataset):
    "Random images and ID vectors with a random flip (Python RNG) and jitter (NumPy RNG) at load time."
    def __init__(self, x, y): self.x, self.y = x, y
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        x = self.x[i].flip(-1) if random.random() < 0.5 else self.x[i]
        return (x + torch.from_numpy(np.random.uniform(-0.05, 0.05, x.shape).astype(np.float32))).clamp(-1, 1), self.y[i]


def make_learner(ckpt_dir: Path, out: Path):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from id3pm_nb.core import seed_everything
    from id3pm_nb.model.unet import UNet, unet_config
    from id3pm_nb.train.checkpoint import CheckpointCallback
    from id3pm_nb.train.learner import IDPreview, PreviewCallback, get_learner
    torch.set_num_threads(1)
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN + N_VALID, 3, SIZE, SIZE, generator=g) * 2 - 1
    y = torch.nn.functional.normalize(torch.randn(N_TRAIN + N_VALID, DIM, generator=g), dim=1)
    dls = DataLoaders(DataLoader(Faces(x[:N_TRAIN], y[:N_TRAIN]), bs=BS, shuffle=True, drop_last=True),
                      DataLoader(Faces(x[N_TRAIN:], y[N_TRAIN:]), bs=BS), device='cpu')
    model = UNet(unet_config('tiny', image_size=SIZE, id_dim=DIM, dropout=0.1))
    return get_learner(dls, model, precision='fp32', lr=1e-3,
                       cbs=[CheckpointCallback(ckpt_dir, every=EVERY, keep=3),
                            PreviewCallback(out/'preview', IDPreview.from_dls(dls, n=2, steps=3), every=5)])


def main(out: Path, mode: str):
    "mode: 'full' (uninterrupted), 'victim' (slow, to be killed), 'resume' (continue the victim's run)."
    from fastai.callback.core import Callback
    from safetensors.torch import save_file
    from id3pm_nb.dist import unwrap

    class Log(Callback):
        "Note the iteration each training batch starts at; the victim sleeps so it can be killed mid-run."
        order = 0
        def before_fit(self): self.first = None
        def before_batch(self):
            if not self.training: return
            if self.first is None: self.first = self.learn.train_iter
            if mode == 'victim': time.sleep(0.4)

    learn = make_learner(out/('full' if mode == 'full' else 'run'), out)
    log = Log(); learn.add_cb(log)
    with learn.no_bar(), learn.no_logging():
        if mode == 'resume': learn.resume()
        else: learn.fit_one_cycle(EPOCHS, 1e-3)
    save_file({**{f'model.{k}': v.contiguous() for k, v in unwrap(learn.model).state_dict().items()},
               **{f'ema.{k}': v.contiguous() for k, v in learn.ema_model.state_dict().items()}}, str(out/f'{mode}.safetensors'))
    (out/f'{mode}.json').write_text(json.dumps(dict(first=log.first, train_iter=learn.train_iter,
                                                   values=[[float(v) for v in r] for r in learn.recorder.values])))


def _run(out: Path, mode: str, **kw):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, __file__, str(out), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _ckpt_iters(folder: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in folder.glob('ckpt-*') if (p/'manifest.json').is_file())


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp('resume')
    victim = _run(out, 'victim')
    full = _run(out, 'full')
    t0 = time.time()
    while max(_ckpt_iters(out/'run'), default=0) < 2 * EVERY and victim.poll() is None and time.time() - t0 < 600: time.sleep(0.05)
    assert victim.poll() is None, f"the victim finished or crashed before it could be killed:\n{victim.stdout.read()[-3000:]}"
    os.kill(victim.pid, signal.SIGKILL); victim.wait()
    killed_at = _ckpt_iters(out/'run')
    # what a kill during a save leaves behind: a temporary folder without manifest (must be ignored and cleaned)
    partial = out/'run'/'.tmp-ckpt-00000099-x'; partial.mkdir(); (partial/'model.safetensors').write_bytes(b'half')
    assert full.wait(timeout=900) == 0, full.stdout.read()[-3000:]
    resumed = _run(out, 'resume')
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read()[-3000:]
    from safetensors.torch import load_file
    load = lambda m: (load_file(str(out/f'{m}.safetensors')), json.loads((out/f'{m}.json').read_text()))
    return out, victim.returncode, killed_at, load('full'), load('resume')


def test_killed_after_a_checkpoint(runs):
    _, rc, killed_at, _, _ = runs
    assert rc == -signal.SIGKILL
    assert killed_at and 2 * EVERY <= killed_at[-1] < EPOCHS * N_TRAIN // BS  # killed mid-run, in the second epoch or later


def test_resume_continues_from_the_checkpoint(runs):
    out, _, killed_at, (_, full), (_, res) = runs
    assert res['first'] == killed_at[-1]  # the first resumed batch is the one after the newest checkpoint
    assert res['train_iter'] == full['train_iter'] == EPOCHS * N_TRAIN // BS
    assert not list((out/'run').glob('.tmp-*'))  # the half-written save was cleaned up


def test_resumed_equals_uninterrupted(runs):
    _, _, _, (wf, full), (wr, res) = runs
    assert wf.keys() == wr.keys()
    bad = [k for k in wf if not torch.equal(wf[k], wr[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"
    assert res['values'] == full['values']  # every epoch's train and validation loss (restored ones and new ones)


def test_corrupt_and_foreign_checkpoints(runs, tmp_path):
    out = runs[0]
    from id3pm_nb.model.bundle import ArtifactError
    from id3pm_nb.train.checkpoint import load_checkpoint, latest_checkpoint
    from id3pm_nb.model.unet import UNet, unet_config
    from id3pm_nb.train.learner import get_learner
    learn = make_learner(tmp_path/'ck', tmp_path)
    ck = tmp_path/'copy'; shutil.copytree(latest_checkpoint(out/'full'), ck)
    load_checkpoint(learn, ck)  # a good one loads
    (ck/'state.json').write_text((ck/'state.json').read_text()[:-10])
    with pytest.raises(ArtifactError, match=r"state\.json is corrupt"): load_checkpoint(learn, ck)
    with pytest.raises(ArtifactError, match=r"state\.json is corrupt: not valid JSON"): load_checkpoint(learn, ck, verify=False)
    (ck/'manifest.json').write_text('{"format": "someone-else"}')
    with pytest.raises(ArtifactError, match=r"manifest\.json is not a checkpoint manifest"): load_checkpoint(learn, ck)
    other = get_learner(learn.dls, UNet(unet_config('tiny', image_size=16, id_dim=8, ch=16, head_ch=16, norm_groups=8)))
    with pytest.raises(ArtifactError, match=r"config\.json is for another model"): load_checkpoint(other, latest_checkpoint(out/'full'))


if __name__ == '__main__':
    main(Path(sys.argv[1]), sys.argv[2])
