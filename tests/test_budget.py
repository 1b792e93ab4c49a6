"""Time budgets at iteration granularity (issue 21 item 6): the plan, a fit that stops exactly at its last planned
iteration in the middle of an epoch with the one-cycle schedule at its end value there, and a resume from a mid-run
checkpoint that ends at the same iteration. Step times are given, never measured: no assertion depends on wall time.
"""
import json, random, shutil

import pytest
import torch

N_TRAIN, N_VALID, BS, SIZE, DIM = 20, 8, 4, 16, 8   # 5 training and 2 validation batches per epoch
LR = 1e-3


def tiny_learner(ckpt=None, every: int = 3):
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from id3pm_nb.core import seed_everything
    from id3pm_nb.model.unet import UNet, unet_config
    from id3pm_nb.train.checkpoint import CheckpointCallback
    from id3pm_nb.train.logs import TrainLog
    from id3pm_nb.train.learner import get_learner

    class Count(Callback):
        "Training and validation batches per epoch."
        def before_fit(self): self.n = []
        def before_epoch(self): self.n.append([0, 0])
        def before_batch(self): self.n[-1][0 if self.training else 1] += 1

    torch.set_num_threads(1)
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN + N_VALID, 3, SIZE, SIZE, generator=g) * 2 - 1
    y = torch.nn.functional.normalize(torch.randn(N_TRAIN + N_VALID, DIM, generator=g), dim=1)
    items = [(x[i], y[i]) for i in range(len(x))]
    random.seed(0)
    train_dl = DataLoader(items[:N_TRAIN], bs=BS, shuffle=True, drop_last=True)
    dls = DataLoaders(train_dl, DataLoader(items[N_TRAIN:], bs=BS), device='cpu')
    model = UNet(unet_config('tiny', image_size=SIZE, id_dim=DIM, ch=16, head_ch=16, norm_groups=8, dropout=0.1))
    cbs = [Count()]
    if ckpt: cbs += [CheckpointCallback(ckpt, every=every, keep=100), TrainLog(ckpt.parent/f'{ckpt.name}-logs')]
    return get_learner(dls, model, precision='fp32', lr=LR, cbs=cbs)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_plan_for_the_gpu_preset_on_a_cpu():
    "The issue's case: 30.7 s per step, 194 batches an epoch, a 3-minute budget: one iteration, not one epoch."
    from id3pm_nb.train.budget import plan_iterations
    p = plan_iterations(30.7, 3 * 60 - 30.7, 194, 11)            # the measuring step is spent already
    assert (p.n_iter, p.n_epoch, p.valid_batches) == (1, 1, 1)
    assert 30.7 + (p.n_iter + p.valid_batches * 2 / 3 + 2) * p.sec_per_iter <= 3 * 60   # with the reserve for the end


def test_plan_in_iterations():
    from id3pm_nb.train.budget import plan_iterations
    p = plan_iterations(0.25, 600., 388, 20)
    assert p.n_epoch == 6 and 5 * 388 < p.n_iter < 6 * 388     # the last epoch cut short
    assert p.valid_batches == 20                                # cheap enough: all of the validation set
    assert (p.n_iter + p.n_epoch * p.valid_batches * 2 / 3 + 2) * p.sec_per_iter <= 0.9 * 600
    tight = plan_iterations(1., 60., 10, 50)                        # a whole validation pass would not fit every epoch
    assert 1 <= tight.valid_batches < 50 and tight.n_iter >= 40
    counts = [plan_iterations(0.25, m * 60., 388, 20).n_iter for m in (1, 2, 4, 8)]
    assert counts == sorted(counts) and counts[-1] >= 7 * counts[0]
    assert plan_iterations(10., 1., 388, 20).n_iter == 1            # never zero iterations
    with pytest.raises(ValueError, match='sec_per_iter=0'): plan_iterations(0., 60., 10, 2)


def test_budget_plan_counts_the_measuring_time():
    from id3pm_nb.train.budget import budget_plan, plan_iterations
    learn = tiny_learner()
    given = budget_plan(learn, 0.1, sec_per_iter=0.05)
    assert given.n_iter == plan_iterations(0.05, 6., N_TRAIN // BS, N_VALID // BS).n_iter
    measured = budget_plan(learn, 0.1)                  # a real measurement: only its consistency is checked
    assert measured.seconds < 6 and measured.sec_per_iter > 0
    again = plan_iterations(measured.sec_per_iter, measured.seconds, N_TRAIN // BS, N_VALID // BS)
    assert measured.n_iter == again.n_iter


@pytest.fixture(scope='module')
def planned(tmp_path_factory):
    "An uninterrupted planned fit of 13 iterations (two epochs of 5 and 3 of the third), checkpoints every 3 kept."
    from id3pm_nb.train.budget import budget_plan
    from id3pm_nb.train.budget import train
    out = tmp_path_factory.mktemp('budget')
    learn = tiny_learner(out/'full')
    plan = budget_plan(learn, 0.05, sec_per_iter=0.15)   # 3 s at 0.15 s a step
    with learn.no_bar(), learn.no_logging():
        train(learn, lr_max=LR, n_iter=plan.n_iter, valid_batches=plan.valid_batches)
    return out, plan, learn


def test_the_plan_of_the_fixture(planned):
    _, plan, _ = planned
    assert (plan.n_iter, plan.n_epoch, plan.n_train, plan.valid_batches) == (13, 3, 5, 1)


def test_training_stops_at_the_planned_iteration(planned):
    out, plan, learn = planned
    assert learn.train_iter == plan.n_iter and learn.n_epoch == plan.n_epoch
    assert learn.count.n == [[5, 1], [5, 1], [3, 1]]            # the last epoch cut at 3; one validation batch each
    assert len(learn.recorder.values) == 3                      # every epoch validated, the cut one too
    assert [len(v) for v in learn.recorder.values] == [3, 3, 3]  # train_loss, valid_loss, id_gain: none dropped
    from id3pm_nb.train.logs import read_log
    assert read_log(out/'full-logs')[1]['iteration'].tolist() == [5, 10, 13]   # log.csv: a row per epoch, the cut one
    kwargs = {'n_iter': 13, 'lr_max': LR, 'valid_batches': 1}      # the plan, in the call every checkpoint records
    assert learn.fit_call == {'method': 'fit_iters', 'kwargs': kwargs, 'dropped': []}


def test_the_schedule_ends_at_the_last_planned_iteration(planned):
    _, plan, learn = planned
    lrs = learn.recorder.lrs
    assert len(lrs) == plan.n_iter
    assert lrs[0] == pytest.approx(LR / 25) and max(lrs) == pytest.approx(LR, rel=1e-3)
    assert lrs[-1] == pytest.approx(LR / 1e5, rel=1e-6)          # fastai's div_final, reached at iteration 13
    assert lrs[-2] > lrs[-1]


def test_the_final_checkpoint_is_finished(planned):
    from id3pm_nb.train.checkpoint import list_checkpoints
    out, plan, _ = planned
    names = [p.name for p in list_checkpoints(out/'full')]
    assert names == [f'ckpt-{i:08d}' for i in (3, 6, 9, 12, 13)]
    state = json.loads((out/'full'/'ckpt-00000013'/'manifest.json').read_text())
    assert state['epoch'] == plan.n_epoch                        # finished: a resume has nothing left to do


@pytest.mark.parametrize('it', [3, 9, 12, 13])   # in the first epoch, the second, the cut third; the finished run
def test_resume_ends_at_the_same_iteration(planned, tmp_path, it):
    "`fit_budget` on a folder holding a mid-run checkpoint resumes the recorded plan, whatever budget it is given now."
    from id3pm_nb.train.budget import fit_budget
    out, plan, full = planned
    shutil.copytree(out/'full'/f'ckpt-{it:08d}', tmp_path/'run'/f'ckpt-{it:08d}')
    learn = tiny_learner(tmp_path/'run')
    with learn.no_bar(), learn.no_logging(): info = fit_budget(learn, minutes=10., log=lambda m: None)
    assert info['resumed'] and info['iterations'] == learn.train_iter == plan.n_iter
    assert same_weights(learn.model, full.model) and same_weights(learn.ema_model, full.ema_model)
    assert learn.recorder.values == full.recorder.values and learn.recorder.lrs == full.recorder.lrs


def test_fit_and_save_writes_the_plan_into_the_bundle(tmp_path):
    "A tiny real budget: the iterations trained are the iterations planned, and the bundle says so."
    from id3pm_nb.model.bundle import load_bundle
    from id3pm_nb.train.budget import fit_and_save
    learn = tiny_learner()
    info = fit_and_save(learn, tmp_path/'bundle', dict(recognizer='test', train_identities=[]), minutes=0.05,
                        log=lambda m: None, progress=False)
    fit = load_bundle(tmp_path/'bundle').info['meta']['fit']
    assert info['iterations'] == learn.train_iter == fit['plan']['n_iter'] == fit['iterations']
    assert learn.fit_call['method'] == 'fit_iters'


def test_resume_finds_fit_iters_with_the_learner_alone():
    "`resume` replays `fit_iters`, which `train.budget` patches in: importing `train.learner` alone brings it along."
    import subprocess, sys
    code = ("import id3pm_nb.train.learner as L, sys; assert hasattr(L.DiffusionLearner, 'fit_iters'); "
            "assert 'id3pm_nb.train.budget' in sys.modules")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
