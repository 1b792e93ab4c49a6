"""Training logs (`logs.TrainLog`): the CSV rows are the Recorder's values, TensorBoard holds the same scalars, a resumed
run continues the logs of the run it resumes (rows a kill left past the checkpoint are dropped, none are lost or
doubled), a new run sets earlier logs aside, and `plot_runs` / `id3pm_curves` draw two runs side by side."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

EPOCHS, N_TRAIN, BS = 3, 20, 4   # 5 batches per epoch, 15 iterations
TIMING = ['images_per_s', 'seconds']


def make_learner(folder: Path):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from id3pm_nb.core import seed_everything
    from id3pm_nb.train.logs import TrainLog
    from id3pm_nb.train.checkpoint import CheckpointCallback
    from id3pm_nb.train.learner import IDPreview, PreviewCallback, get_learner
    torch.set_num_threads(1)
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN + 8, 3, 16, 16, generator=g) * 2 - 1
    y = torch.nn.functional.normalize(torch.randn(N_TRAIN + 8, 8, generator=g), dim=1)
    items = lambda a, b: [(x[i], y[i]) for i in range(a, b)]
    dls = DataLoaders(DataLoader(items(0, N_TRAIN), bs=BS, shuffle=True, drop_last=True), DataLoader(items(N_TRAIN, N_TRAIN + 8), bs=BS), device='cpu')
    return get_learner(dls, 'tiny', precision='fp32', lr=1e-3,
                       cbs=[CheckpointCallback(folder/'ckpt', every=1, keep=EPOCHS * 5), TrainLog(folder, every=1),
                            PreviewCallback(folder/'previews', IDPreview.from_dls(dls, n=2, steps=2), every=5)])


def fit(folder: Path, resume: int | None = None):
    learn = make_learner(folder)
    with learn.no_bar(), learn.no_logging():
        if resume is None: learn.fit_one_cycle(EPOCHS, 1e-3)
        else: learn.resume(folder/'ckpt'/f'ckpt-{resume:08d}')
    return learn


def tb_scalars(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(folder/'tb'), size_guidance={'scalars': 0, 'images': 0}); ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}, len(ea.Images('preview'))


@pytest.fixture(scope='module')
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp('logs')/'full'
    return out, fit(out)


def test_csv_is_the_recorder(full):
    from id3pm_nb.train.logs import read_log
    out, learn = full
    steps, epochs = read_log(out)
    r = learn.recorder
    assert steps.iteration.tolist() == list(range(1, EPOCHS * 5 + 1))
    assert steps.smooth_loss.tolist() == [float(v) for v in r.losses] and steps.lr.tolist() == [float(v) for v in r.lrs]
    assert epochs.iteration.tolist() == [5, 10, 15] and epochs.epoch.tolist() == [0, 1, 2]
    assert epochs[['train_loss', 'valid_loss', 'id_gain']].values.tolist() == [[float(v) for v in row] for row in r.values]
    assert (steps.images_per_s > 0).all() and (epochs.seconds > 0).all()


def test_tensorboard_holds_the_csv(full):
    from id3pm_nb.train.logs import read_log
    out, _ = full
    steps, epochs = read_log(out)
    tb, n_img = tb_scalars(out)
    for k in ('loss', 'smooth_loss', 'lr'):
        assert [s for s, _ in tb[f'train/{k}']] == steps.iteration.tolist()
        np.testing.assert_allclose([v for _, v in tb[f'train/{k}']], steps[k], rtol=1e-6)
    for k in ('train_loss', 'valid_loss', 'id_gain'):
        np.testing.assert_allclose([v for _, v in tb[f'epoch/{k}']], epochs[k], rtol=1e-6)
    assert n_img == 3                                        # the preview grids at iterations 5, 10, 15


@pytest.mark.parametrize('ckpt', [7, 10])  # mid-epoch; the end of an epoch's training, before its validation
def test_resume_continues_the_logs(full, tmp_path, ckpt):
    "A copy of the finished run resumed from an earlier checkpoint: the logs it holds past that checkpoint are what a kill leaves."
    from id3pm_nb.train.logs import read_log
    out, _ = full
    run = tmp_path/'run'; shutil.copytree(out, run)
    with open(run/'steps.csv', 'a') as f: f.write('16,2,0.1')     # a row cut short by the kill
    fit(run, resume=ckpt)
    (s0, e0), (s1, e1) = read_log(out), read_log(run)
    pd.testing.assert_frame_equal(s1.drop(columns='images_per_s'), s0.drop(columns='images_per_s'))   # resuming is bit-exact on CPU
    pd.testing.assert_frame_equal(e1.drop(columns=TIMING), e0.drop(columns=TIMING))
    tb, n_img = tb_scalars(run)
    for tag, pts in tb.items():
        steps = [s for s, _ in pts]
        assert steps == sorted(set(steps)), f"{tag}: a step twice or out of order after the resume: {steps}"
    assert [s for s, _ in tb['train/smooth_loss']] == list(range(1, 16)) and [s for s, _ in tb['epoch/valid_loss']] == [5, 10, 15]
    np.testing.assert_allclose([v for _, v in tb['epoch/valid_loss']], e0.valid_loss, rtol=1e-6)
    assert n_img == 3


def test_a_new_run_sets_old_logs_aside(full, tmp_path):
    from id3pm_nb.train.logs import read_log
    out, _ = full
    run = tmp_path/'run'; shutil.copytree(out, run); shutil.rmtree(run/'ckpt')
    learn = make_learner(run)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)             # not a resume: a new run in the same folder
    assert sorted(p.name for p in (run/'previous-1').iterdir()) == ['log.csv', 'steps.csv', 'tb']
    pd.testing.assert_frame_equal(read_log(run/'previous-1')[0], read_log(out)[0])
    assert read_log(run)[0].iteration.tolist() == [1, 2, 3, 4, 5]


def test_plot_two_runs(full, tmp_path):
    import contextlib, io
    from id3pm_nb.train.logs import plot_runs, CURVES
    from id3pm_nb.cli.train import curves_cli, run_cli
    out, _ = full
    other = tmp_path/'other'; shutil.copytree(out, other)
    fig = plot_runs([out, other])
    assert len(fig.axes) == len(CURVES) and all(len(ax.lines) == 2 for ax in fig.axes)
    with contextlib.redirect_stdout(io.StringIO()) as o: run_cli(curves_cli, [str(out), str(other), '--out', str(tmp_path/'c.png')])
    assert (tmp_path/'c.png').stat().st_size > 10_000 and str(tmp_path/'c.png') in o.getvalue()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()) as err: run_cli(curves_cli, [str(tmp_path/'none')])
    assert e.value.code == 2 and 'holds no training log' in err.getvalue()


def test_id3pm_train_logs_into_its_run_folder(tmp_path):
    "The command's run folder holds the logs, and the rerun that resumes the finished run leaves them as they were."
    import contextlib, io, json, os
    from id3pm_nb.cli.train import run_cli, train_cli
    from id3pm_nb.data.prepare import prepare
    from id3pm_nb.data.dataset import scan_lfw
    from id3pm_nb.train.logs import read_log
    lfw = scan_lfw(os.environ['ID3PM_LFW'])
    people = lfw.identity.value_counts().index[:6]
    P = prepare(lfw[lfw.identity.isin(people)].groupby('identity').head(3), out_dir=tmp_path/'prep', sizes=(32,), progress=False, verbose=False)
    args = [str(P.root), '--out', str(tmp_path/'run'), '--preset', 'tiny', '--epochs', '2', '--bs', '4', '--valid_pct', '0.34', '--quiet']
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): run_cli(train_cli, args)
    steps, epochs = read_log(tmp_path/'run')
    n_it = json.loads((tmp_path/'run'/'bundle'/'bundle.json').read_text())['training']['iterations']
    assert epochs.iteration.tolist() == [n_it // 2, n_it] and steps.iteration.tolist() == list(range(10, n_it + 1, 10))
    assert {'train_loss', 'valid_loss', 'id_gain', 'lr'} <= set(epochs.columns) and list((tmp_path/'run'/'tb').glob('events.out.tfevents.*'))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): run_cli(train_cli, args)
    pd.testing.assert_frame_equal(read_log(tmp_path/'run')[1], epochs)
