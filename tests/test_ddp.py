"""Two CPU processes (gloo) train the real learner with fastai's `distrib_ctx` on Accelerate; replicas must stay in sync.

Run by pytest, this file launches itself as the worker with `accelerate launch --multi_gpu --num_processes 2`
(CPU only: `id3pm_nb.train.learner.train` asks Accelerate for CPU + gloo when there is no GPU).
"""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

N_TRAIN, N_VALID, BS, SIZE, DIM = 24, 8, 4, 16, 8


def tiny_dls(seed: int = 0):
    "Random 'faces' and unit ID vectors as fastai DataLoaders (same on every rank)."
    import random
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N_TRAIN + N_VALID, 3, SIZE, SIZE, generator=g) * 2 - 1
    y = torch.nn.functional.normalize(torch.randn(N_TRAIN + N_VALID, DIM, generator=g), dim=1)
    items = [(x[i], y[i]) for i in range(len(x))]
    random.seed(seed)
    return DataLoaders(DataLoader(items[:N_TRAIN], bs=BS, shuffle=True, drop_last=True),
                       DataLoader(items[N_TRAIN:], bs=BS), device='cpu')


def worker(out: Path):
    "One rank: train 2 epochs under DDP, then write its parameters, EMA, batches seen and shard_map result."
    from fastai.callback.core import Callback
    from safetensors.torch import save_file
    from id3pm_nb.core import seed_everything
    from id3pm_nb.model.unet import UNet, unet_config, perturb_zero_init
    from id3pm_nb.train.learner import get_learner
    from id3pm_nb.train.budget import train
    from id3pm_nb.dist import world, shard_map, unwrap
    from id3pm_nb.train.checkpoint import CheckpointCallback, latest_checkpoint
    torch.set_num_threads(1)
    seed_everything(0)

    class Seen(Callback):
        "Record the training images (by checksum) each rank gets, before the diffusion callback replaces xb."
        order = 0
        def before_fit(self): self.sums = []
        def before_batch(self):
            if self.training: self.sums += [round(float(v), 4) for v in self.learn.xb[0].flatten(1).sum(1)]

    seen = Seen()
    model = perturb_zero_init(UNet(unet_config('tiny', image_size=SIZE, id_dim=DIM)), seed=1)  # non-zero output layers: every weight gets gradients
    learn = get_learner(tiny_dls(), model, precision='fp32', cbs=[seen, CheckpointCallback(out/'ckpt', every=2)])
    init = {k: v.clone() for k, v in unwrap(learn.model).state_dict().items()}
    train(learn, 2, 1e-3)
    rank, ws = world()
    sd = unwrap(learn.model).state_dict()
    save_file({**{f'model.{k}': v.contiguous() for k, v in sd.items()},
               **{f'ema.{k}': v.contiguous() for k, v in learn.ema_model.state_dict().items()},
               **{f'init.{k}': v.contiguous() for k, v in init.items()}}, str(out/f'rank{rank}.safetensors'))
    items_seen = []
    def embed(batch):
        items_seen.extend(batch)
        return np.stack([[i, 2 * i, -i] for i in batch]).astype(np.float32)
    vecs = shard_map(embed, list(range(11)), bs=2)
    ck = latest_checkpoint(out/'ckpt')
    (out/f'rank{rank}.json').write_text(json.dumps(dict(
        rank=rank, world=ws, train_iter=learn.train_iter, sums=seen.sums, items=items_seen, vecs=vecs.tolist(),
        gen=learn.diffusion.gen.initial_seed(), ckpt=ck.name if ck else None,
        ckpt_world=json.loads((ck/'manifest.json').read_text())['world_size'] if ck else None,
        valid_loss=float(learn.recorder.values[-1][1]))))


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'ID3PM_DDP_OUT': str(out), 'PYTHONPATH': str(Path(__file__).parents[1])}
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29561', __file__]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"accelerate launch failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    from safetensors.torch import load_file
    return out, [json.loads((out/f'rank{i}.json').read_text()) for i in range(2)], [load_file(str(out/f'rank{i}.safetensors')) for i in range(2)]


def test_two_ranks_ran(ranks):
    _, info, _ = ranks
    assert [i['rank'] for i in info] == [0, 1] and all(i['world'] == 2 for i in info)
    # 24 training images, batch 4 per rank, 2 ranks: 3 iterations per epoch, 2 epochs
    assert [i['train_iter'] for i in info] == [6, 6]
    assert info[0]['gen'] != info[1]['gen']  # each rank draws its own t / noise (seed + rank)


def test_replicas_in_sync(ranks):
    _, _, sds = ranks
    a, b = sds
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith(('model.', 'ema.')): assert torch.equal(a[k], b[k]), f"{k} differs between ranks"
    moved = [k for k in a if k.startswith('model.') and not torch.equal(a[k], a['init.' + k[6:]])]
    n_model = sum(k.startswith('model.') for k in a)
    assert len(moved) > 0.9 * n_model, f"only {len(moved)}/{n_model} tensors changed: did training run?"


def test_data_is_sharded(ranks):
    _, info, _ = ranks
    s0, s1 = info[0]['sums'], info[1]['sums']
    assert len(s0) == len(s1) == 2 * 3 * 4  # 2 epochs x 3 batches x 4 images
    for e in range(2):  # within an epoch the ranks see disjoint images that together cover the training set
        e0, e1 = set(s0[e*12:(e+1)*12]), set(s1[e*12:(e+1)*12])
        assert not e0 & e1 and len(e0 | e1) == 24


def test_checkpoint_and_valid_loss(ranks):
    out, info, _ = ranks
    assert info[0]['ckpt'] == info[1]['ckpt'] == 'ckpt-00000006'  # rank 0 wrote it, both see it
    assert info[0]['ckpt_world'] == 2  # both ranks' RNG states are in it
    assert info[0]['valid_loss'] == info[1]['valid_loss']  # fastai gathers the validation loss across ranks


def test_shard_map(ranks):
    _, info, _ = ranks
    assert info[0]['items'] == [0, 2, 4, 6, 8, 10] and info[1]['items'] == [1, 3, 5, 7, 9]  # each rank its share only
    want = [[i, 2 * i, -i] for i in range(11)]
    assert info[0]['vecs'] == want and info[1]['vecs'] == want  # gathered in order, on every rank


if __name__ == '__main__':
    worker(Path(os.environ['ID3PM_DDP_OUT']))
