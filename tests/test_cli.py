"""The console scripts as a user runs them: exit codes, one-line errors, and each command end to end on a few LFW faces.

Each command is started the way pip's generated console script starts it (a file that calls the `call_parse`
function from its top level), so `--help`, argument parsing and exit codes are the real ones. `id3pm_train` also runs
under `accelerate launch` with two CPU processes (gloo).
"""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LFW = Path(os.environ['ID3PM_LFW'])
COMMANDS = ['prepare', 'train', 'sample', 'eval', 'demo', 'train_sr', 'curves']
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE', 'MPLBACKEND': 'Agg'}


def console_scripts() -> dict[str, tuple[str, str]]:
    "settings.ini's console scripts: name -> (module, function)."
    import configparser
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT/'settings.ini')
    lines = [l.strip() for l in cfg['DEFAULT']['console_scripts'].splitlines() if l.strip()]
    return {name: tuple(target.split(':')) for name, target in (l.split('=') for l in lines)}


@pytest.fixture(scope='module')
def scripts(tmp_path_factory):
    "One console-script file per command, as pip writes them from settings.ini (`id3pm_<cmd>=<module>:<cmd>_cli`)."
    d, entry = tmp_path_factory.mktemp('bin'), console_scripts()
    assert sorted(entry) == sorted(f'id3pm_{c}' for c in COMMANDS)
    for name, (module, func) in entry.items():
        (d/name).write_text(textwrap.dedent(f"""\
            import sys
            from {module} import {func}
            if __name__ == '__main__': sys.exit({func}())
            """))
    return d


def run(scripts, cmd, *args, timeout=900, env=None):
    return subprocess.run([sys.executable, str(scripts/f'id3pm_{cmd}'), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or ENV, cwd=scripts)


def error_line(r) -> str:
    "The last non-empty line of stderr."
    return [l for l in r.stderr.splitlines() if l.strip()][-1]


@pytest.mark.parametrize('cmd', COMMANDS)
def test_help(scripts, cmd):
    r = run(scripts, cmd, '--help')
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f'usage: id3pm_{cmd}'), r.stdout[:200]
    assert '--quiet' in r.stdout


def test_bad_arguments_exit_2(scripts):
    r = run(scripts, 'sample', '--no-such-option')
    assert r.returncode == 2 and 'usage: id3pm_sample' in r.stderr          # argparse
    r = run(scripts, 'sample', '/no/such/bundle', str(LFW))
    assert r.returncode == 2 and error_line(r) == 'id3pm_sample: error: id3pm_nb bundle folder /no/such/bundle does not exist'
    r = run(scripts, 'sample', scripts/'id3pm_sample', str(LFW))            # a file where the bundle folder should be
    assert r.returncode == 2 and error_line(r).startswith(f"id3pm_sample: error: id3pm_nb bundle folder {scripts/'id3pm_sample'} is a file, not a folder")
    r = run(scripts, 'prepare', '/no/such/folder')
    assert r.returncode == 2 and error_line(r).startswith('id3pm_prepare: error:') and '/no/such/folder' in error_line(r)
    r = run(scripts, 'demo', '--lfw', '/no/such/lfw', '--quiet')
    assert r.returncode == 2 and '/no/such/lfw' in error_line(r)
    r = run(scripts, 'demo', '--out', scripts/'id3pm_demo', '--quiet')       # a file where the output folder should go
    assert r.returncode == 2 and error_line(r).endswith('exists and is not a folder: choose another output folder')


def test_python_m_dispatch():
    r = subprocess.run([sys.executable, '-m', 'id3pm_nb.cli.train', 'sample', '--help'], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith('usage: id3pm_sample')
    r = subprocess.run([sys.executable, '-m', 'id3pm_nb.cli.train', 'bogus'], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and 'usage: python -m id3pm_nb.cli.train {prepare,train,sample,eval,demo,train_sr,curves}' in r.stderr


@pytest.fixture(scope='module')
def prepared(scripts, tmp_path_factory):
    "A prepare cache of 24 LFW images at 32 px, made by id3pm_prepare."
    people = sorted(p for p in (LFW/'lfw-deepfunneled').iterdir() if len(list(p.glob('*.jpg'))) >= 3)[:8]
    src = tmp_path_factory.mktemp('faces')
    for p in people:
        (src/p.name).mkdir()
        for f in sorted(p.glob('*.jpg'))[:3]: (src/p.name/f.name).symlink_to(f)
    out = tmp_path_factory.mktemp('prep')
    r = run(scripts, 'prepare', src, '--out', out, '--sizes', '32', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    root = Path(r.stdout.strip().splitlines()[-1])
    assert (root/'settings.json').is_file() and root.parent == out
    return root, src


def test_prepare_rerun_is_cached(scripts, prepared):
    root, src = prepared
    r = run(scripts, 'prepare', src, '--out', root.parent, '--sizes', '32')
    assert r.returncode == 0 and Path(r.stdout.strip().splitlines()[-1]) == root
    assert '| 0 processed' in r.stdout, r.stdout                           # nothing recomputed


@pytest.fixture(scope='module')
def bundle(scripts, prepared, tmp_path_factory):
    "A tiny model trained for one epoch by id3pm_train."
    out = tmp_path_factory.mktemp('run')
    r = run(scripts, 'train', prepared[0], '--out', out, '--preset', 'tiny', '--epochs', '1', '--bs', '4', '--valid_pct', '0.2', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert Path(r.stdout.strip().splitlines()[-1]) == out/'bundle'
    return out/'bundle'


def test_train_writes_bundle_and_resumes(scripts, prepared, bundle):
    info = json.loads((bundle/'bundle.json').read_text())
    assert info['image_size'] == 32 and info['id_dim'] == 128 and info['recognizer'].startswith('dlib_resnet_v1-')
    assert info['meta']['train_identities'] and info['training']['iterations'] > 0
    r = run(scripts, 'train', prepared[0], '--out', bundle.parent, '--preset', 'tiny', '--epochs', '1', '--bs', '4', '--valid_pct', '0.2')
    assert r.returncode == 0 and 'resuming from' in r.stderr                # the finished run is not trained again
    assert json.loads((bundle/'bundle.json').read_text())['training']['iterations'] == info['training']['iterations']


def test_train_needs_a_budget(scripts, prepared, tmp_path):
    r = run(scripts, 'train', prepared[0], '--out', tmp_path)
    assert r.returncode == 2 and error_line(r) == 'id3pm_train: error: give --epochs N or --minutes M'


def test_sample(scripts, bundle, prepared, tmp_path):
    person = sorted(prepared[1].iterdir())[0]
    r = run(scripts, 'sample', bundle, person, person/sorted(os.listdir(person))[0], '--out', tmp_path/'s', '--n', '2',
            '--scale', '0,2', '--steps', '3', '--seed', '5', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path/'s').iterdir())
    assert names == ['000_' + person.name, '001_' + sorted(os.listdir(person))[0][:-4], 'grid_s0.png', 'grid_s2.png', 'ids.npz', 'settings.json', 'status.json']
    assert len(list((tmp_path/'s'/names[0]).glob('*.png'))) == 4
    runs = json.loads((tmp_path/'s'/'settings.json').read_text())['runs']             # what each scale was sampled with
    assert [r['scale'] for r in runs] == [0, 2] and all(r['queries'] == 0 and r['steps'] == 3 for r in runs)
    z = np.load(tmp_path/'s'/'ids.npz')
    assert z['ids'].shape == (2, 128) and str(z['fingerprint']).startswith('dlib_resnet_v1-')
    # the same person and seed alone gives the same images (seeded per target and sample). The other target and scale
    # change the batch, and CPU kernels pick their algorithm by shape: up to an occasional uint8 level (05a_pipeline)
    r2 = run(scripts, 'sample', bundle, person, '--out', tmp_path/'t', '--n', '2', '--scale', '2', '--steps', '3', '--seed', '5', '--quiet')
    assert r2.returncode == 0, r2.stderr[-3000:]
    for f in ('s2_00.png', 's2_01.png'):
        a, b = (np.asarray(__import__('PIL.Image').Image.open(d/f'000_{person.name}'/f), int) for d in (tmp_path/'s', tmp_path/'t'))
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01, (f, np.abs(a - b).max(), (a != b).mean())
    # with 4 queries per image to the bundle's recognizer: the cost and the queried recognizer are recorded
    r3 = run(scripts, 'sample', bundle, person, '--out', tmp_path/'q', '--n', '2', '--scale', '2', '--steps', '3', '--queries', '4', '--quiet')
    assert r3.returncode == 0, r3.stderr[-3000:]
    q = json.loads((tmp_path/'q'/'settings.json').read_text())['runs'][0]
    assert q['queries'] == 4 and q['strategy'] == 'best' and q['queried'].startswith('dlib_resnet_v1-') and len(q['query_scores'][0]) == 2
    r4 = run(scripts, 'sample', bundle, person, '--out', tmp_path/'bad', '--queries', '-1', '--quiet')
    assert r4.returncode == 2 and 'queries=-1' in error_line(r4), r4.stderr[-2000:]


def test_sample_records_the_spec_it_used(bundle, prepared, tmp_path, monkeypatch):
    """Following --steps and --temperature from id3pm_sample to the sampler: the spec that reached `sampling.sample` is the
    one settings.json records, and what the command line did not set comes from the bundle's recorded spec."""
    import id3pm_nb.use.pipeline as pl
    from id3pm_nb.cli.use import run_cli, sample_cli
    from id3pm_nb.model.sampling import SamplingSpec
    seen, real = [], pl.sample_model
    def spy(model, x, y, spec, **kw):
        seen.append(spec)
        return real(model, x, y, spec, **kw)
    monkeypatch.setattr(pl, 'sample_model', spy)
    person = sorted(prepared[1].iterdir())[0]
    run_cli(sample_cli, [str(bundle), str(person), '--out', str(tmp_path/'s'), '--n', '1', '--scale', '2', '--steps', '3',
                         '--temperature', '0.6', '--quiet'])
    rec = json.loads((tmp_path/'s'/'settings.json').read_text())['runs'][0]['spec']
    assert seen and all(s == SamplingSpec(**rec) for s in seen), (seen, rec)
    assert (rec['scale'], rec['steps'], rec['temperature']) == (2.0, 3, 0.6)
    recorded = json.loads((bundle/'bundle.json').read_text())['sampling']           # the bundle's spec: the rest
    assert {k: rec[k] for k in ('sampler', 'precision', 'clip_x0')} == {k: recorded[k] for k in ('sampler', 'precision', 'clip_x0')}


def test_sample_keeps_going(scripts, bundle, prepared, tmp_path):
    "One unusable target among good ones is skipped and reported, the others are written, and the exit code is 3 (partial)."
    person = sorted(prepared[1].iterdir())[0]
    np.save(tmp_path/'bad.npy', np.ones((2, 512), np.float32))
    r = run(scripts, 'sample', bundle, person, tmp_path/'bad.npy', '--out', tmp_path/'s', '--n', '1', '--steps', '2', '--quiet')
    assert r.returncode == 3 and 'skipped' in r.stderr and 'bad.npy' in r.stderr, r.stderr[-2000:]
    st = json.loads((tmp_path/'s'/'status.json').read_text())
    assert [u['status'] for u in st] == ['ok', 'skipped'] and 'shape (2, 512)' in st[1]['reason']
    assert len(list((tmp_path/'s'/f'000_{person.name}').glob('*.png'))) == 1 and r.stdout.strip() == str(tmp_path/'s')


def test_sample_bad_vectors(scripts, bundle, tmp_path):
    np.save(tmp_path/'v.npy', np.ones((2, 512), np.float32))
    r = run(scripts, 'sample', bundle, tmp_path/'v.npy', '--out', tmp_path/'o')
    assert r.returncode == 2 and 'shape (2, 512), but this model takes (N, 128)' in error_line(r)
    np.savez(tmp_path/'f.npz', ids=np.ones((1, 128), np.float32), fingerprint='facenet_vggface2-0000')
    r = run(scripts, 'sample', bundle, tmp_path/'f.npz', '--out', tmp_path/'o')
    assert r.returncode == 2 and "come from recognizer 'facenet_vggface2-0000'" in error_line(r)


def test_eval(scripts, bundle, tmp_path):
    r = run(scripts, 'eval', bundle, '--out', tmp_path/'e', '--per_fold', '1', '--scales', '1', '--samples', '1', '--steps', '2', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path/'e'/'summary.json').read_text())
    assert s['target'] == 'dlib' and set(s['recognizers']) == {'dlib', 'facenet'} and len(s['runs']) == 1
    assert {'roc_dlib.png', 'roc_facenet.png', 'tradeoff_dlib.png', 'tradeoff_facenet.png', 'sar.png', 'scores_facenet.png', 'report.md'} <= {p.name for p in (tmp_path/'e').iterdir()}
    assert s['identities']['known'] and s['identities']['n_seen'] == 8                   # 8 people trained or validated on, left out
    assert '## Standard attack protocol' in (tmp_path/'e'/'report.md').read_text()


def _untrained_bundle(folder, train_identities):
    "A tiny untrained dlib bundle, saved in a subprocess (nothing is trained)."
    code = ("import sys; from id3pm_nb.model.unet import UNet, unet_config; from id3pm_nb.model.bundle import save_bundle; "
            "from id3pm_nb.fr.recognizer import load_recognizer; "
            f"save_bundle({str(folder)!r}, UNet(unet_config('tiny', image_size=32, id_dim=128)), "
            f"{{'recognizer': load_recognizer('dlib').fingerprint}}, train_identities={train_identities!r})")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return folder


def test_eval_refuses_a_bundle_that_cannot_say_whom_it_saw(scripts, tmp_path):
    "No leakage by construction: a bundle without its training identities is refused, and scored only when told, with a warning."
    unknown, known = _untrained_bundle(tmp_path/'unknown', 'unknown'), _untrained_bundle(tmp_path/'nobody', [])
    people = sorted(p for p in (LFW/'lfw-deepfunneled').iterdir() if len(list(p.glob('*.jpg'))) >= 2)[40:60]
    faces = tmp_path/'faces'
    for p in people:
        (faces/p.name).mkdir(parents=True)
        for f in sorted(p.glob('*.jpg'))[:2]: (faces/p.name/f.name).symlink_to(f)
    args = ['--data', faces, '--per_fold', '1', '--scales', '2', '--samples', '1', '--steps', '2', '--quiet']
    r = run(scripts, 'eval', unknown, '--out', tmp_path/'e', *args)
    assert r.returncode == 2 and 'does not record which people it was trained on' in error_line(r) and '--score_unknown' in error_line(r)
    assert not (tmp_path/'e').exists()
    r = run(scripts, 'eval', unknown, known, '--out', tmp_path/'e', '--score_unknown', *args)     # any dataset, two models
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Warning: nobody could tell which people this model was trained on' in (tmp_path/'e'/'unknown'/'report.md').read_text()
    assert 'Warning' not in (tmp_path/'e'/'nobody'/'report.md').read_text()
    s = json.loads((tmp_path/'e'/'nobody'/'summary.json').read_text())
    assert str(faces) in s['source'] and s['n_genuine'] == 10 and s['identities'] == {'known': True, 'n_seen': 0, 'people_dropped': 0, 'pairs_dropped': 0}
    m = s['runs'][0]['fr']['facenet']
    assert len(m['sar_type1_ci']['0.01']) == 2 and len(m['cos_ci']) == 2 and 0 <= m['found'] <= 1
    assert (tmp_path/'e'/'transfer.md').read_text().count('| ID3PM ') == 4 and {'unknown', 'nobody'} <= {p.name for p in (tmp_path/'e').iterdir()}              # two models x (type I, type II)


def test_demo_tiny(scripts, tmp_path):
    r = run(scripts, 'demo', '--out', tmp_path/'d', '--images', '40', '--test', '3', '--show', '2', '--samples', '1', '--steps', '2',
            '--minutes', '0.02', '--preset', 'cpu', '--cache', tmp_path/'cache', '--queries', '4', '--strategy', 'beam', '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert '| another photo, same person |' in r.stdout                      # the report is printed
    js = json.loads((tmp_path/'d'/'report.json').read_text())
    assert list(js['scores'])[:6] == ['linear decoder (ridge, the baseline)'] + [f'ID3PM s = {s}' for s in range(4)] + ['ID3PM s = 3, 4 queries (beam)']
    assert js['scores']['ID3PM s = 3, 4 queries (beam)']['queries'] == 4 and js['queried'] == js['recognizer']
    r = run(scripts, 'demo', '--out', tmp_path/'d2', '--judge', 'dlib', '--quiet')   # a judge that was trained on: refused before any work
    assert r.returncode == 2 and 'the attack was trained on' in r.stderr, r.stderr[-2000:]
    assert {'cos', 'sar', 'found', 'fd'} <= set(js['scores']['ID3PM s = 3']) and js['judge'].startswith('facenet')
    assert (tmp_path/'d'/'grid.png').stat().st_size > 1000 and (tmp_path/'d'/'samples.png').stat().st_size > 1000


def test_train_under_accelerate_two_processes(prepared, tmp_path):
    "id3pm_train under `accelerate launch` with two CPU processes: one bundle, written by rank 0, after a DDP fit."
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29563',
           '-m', 'id3pm_nb.cli.train', 'train', str(prepared[0]), '--out', str(tmp_path/'ddp'), '--preset', 'tiny', '--epochs', '1',
           '--bs', '4', '--valid_pct', '0.2', '--quiet']
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    info = json.loads((tmp_path/'ddp'/'bundle'/'bundle.json').read_text())
    ck = json.loads((sorted((tmp_path/'ddp'/'ckpt').glob('ckpt-*'))[-1]/'manifest.json').read_text())
    assert ck['world_size'] == 2 and info['training']['iterations'] == ck['iteration']
