"The benchmarks' command lines run end to end at a miniature size (`--quick`): every step of `bench/identity.py` and `bench/gpu.py`."
import importlib.util, json, os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]/'bench'


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f'bench_{name}', BENCH/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); return mod


@pytest.fixture(scope='module')
def lfw() -> str:
    p = os.environ.get('ID3PM_LFW')
    if not p or not Path(p).is_dir(): pytest.fail("set ID3PM_LFW to the LFW folder (with lfw-deepfunneled/ and pairs.txt), e.g. ../shared/data/lfw")
    return p


def test_identity_quick(lfw, tmp_path, capsys):
    "Both recipes train, sample and are judged; the table has the baseline, every (recipe, scale) and the three reference rows."
    r = _load('identity').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    rows = list(r['table'].index)
    assert rows[0] == 'linear decoder (ridge)' and rows[1:5] == ['cpu s = 0', 'cpu s = 2', 'cpu-paper s = 0', 'cpu-paper s = 2']
    assert rows[-2:] == ['another photo, same person', 'different people']
    assert r['trained']['cpu']['prior_rank'] == 8 and r['trained']['cpu-paper']['prior_rank'] == 0
    js = json.loads((tmp_path/'out'/'identity.json').read_text())
    assert set(js['scores']) == set(rows) and (tmp_path/'out'/'grid.png').stat().st_size > 1000
    real = r['table'].loc['another photo, same person', 'cos']
    assert real > r['table'].loc['different people', 'cos'] + 0.3        # the judge tells people apart
    assert '| linear decoder (ridge) |' in capsys.readouterr().out
    r2 = _load('identity').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    assert r2['trained']['cpu']['reused'] and r2['trained']['cpu-paper']['reused']   # the trained models are reused


def test_gpu_quick(lfw, tmp_path, capsys):
    "bench/gpu.py packs LFW (JPEG crops + the judge's held-out vectors), trains from the pack alone, judges, and times the samplers."
    r = _load('gpu').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    assert (tmp_path/'out'/'pack.npz').is_file() and r['iterations'] > 0 and r['train_images_per_s'] > 0
    assert list(r['table'].index[:3]) == ['linear decoder (ridge)', 'quick s = 0', 'quick s = 2']
    assert len(r['sample_seconds']) == 4 and all(v > 0 for v in r['sample_seconds'].values())
    assert 'seconds to sample 16 guided images' in capsys.readouterr().out


def test_directions_quick(lfw, tmp_path, capsys):
    "bench/directions.py on a tiny Gaussian-prior bundle: directions fitted, edits sampled and read back, strips written, the targets reported."
    r = _load('directions').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    assert set(r['directions']) == {'female', 'older'} and all(d.std > 0 for d in r['directions'].values())
    assert list(r['table'].edit) == ['none', 'gender (towards the other)', 'older', 'younger']
    assert r['table'].faces_found.between(0, 1).all() and r['table'].id_kept.between(0, 1).all()
    js = json.loads((tmp_path/'out'/'directions.json').read_text())
    assert js['people'] and {'gender_flipped', 'age_moved', 'gender_target_met'} <= set(js)
    assert all((tmp_path/'out'/f).stat().st_size > 5000 for f in ('gender.png', 'age.png', 'pca.png'))
    assert 'At edit sizes with faces found' in capsys.readouterr().out


def test_superres_quick(lfw, tmp_path, capsys):
    "bench/superres.py trains a miniature base model and SR stage, attaches it, and judges it next to bicubic on held-out people."
    r = _load('superres').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    rows = list(r['rows'])
    assert rows[:3] == [('real', 'real 64 px crop'), ('real', 'bicubic from 32 px'), ('generated', 'bicubic, s = 3')]
    assert len(rows) == 5 and rows[3][0] == 'real' and rows[4][0] == 'generated' and rows[3][1].startswith('SR stage')
    real_sr = r['rows'][rows[3]]
    assert 0 < real_sr['ssim'] <= 1 and real_sr['psnr'] > 10 and 'gain' in real_sr and -1 <= real_sr['cos'] <= 1
    assert r['rows'][rows[0]]['sharpness'] > r['rows'][rows[1]]['sharpness']          # a real crop is sharper than its bicubic upsampling
    assert set(r['people']).isdisjoint(json.loads((tmp_path/'out'/'bundle'/'bundle.json').read_text())['identities']['train'])
    assert all(v > 0 for v in r['sr_seconds_per16'].values()) and (tmp_path/'out'/'grid.png').stat().st_size > 1000
    out = capsys.readouterr().out
    assert '| real | bicubic from 32 px |' in out and 'SR adds' in out


def test_queries_quick(lfw, tmp_path, capsys):
    "bench/queries.py trains a miniature model, then runs every strategy at a budget (with and without the surrogate step) next to plain sampling, the baseline and real photos."
    r = _load('queries').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    rows = list(r['table'].index)
    assert rows[:4] == ['linear decoder (ridge)', 'plain (0 queries)', 'best, 4 queries, step 0', 'best, 4 queries'] and rows[-1] == 'different people'
    t = r['table']
    assert t.loc['plain (0 queries)', 'queries'] == 0 and (t.loc[[b.label for b in r['rows'][1:]], 'queries'] == 4).all()
    assert (t.loc[[b.label for b in r['rows']], 'seconds'] > 0).all() and 'sar@0.001' in t
    assert (tmp_path/'out'/'curve.png').stat().st_size > 5000 and (tmp_path/'out'/'grid.png').stat().st_size > 1000
    js = json.loads((tmp_path/'out'/'queries.json').read_text())
    assert set(js['scores']) == set(rows) and 'queried: dlib_resnet_v1' in js['setup']
    assert '| best, 4 queries |' in capsys.readouterr().out


def test_cads_quick(lfw, tmp_path, capsys):
    "bench/cads.py samples with and without CADS at the same seeds and judges both next to the baseline."
    r = _load('cads').main(['--quick', '--lfw', lfw, '--out', str(tmp_path/'out'), '--cache', str(tmp_path/'cache')])
    assert r['labels'] == ['s = 2', 's = 2, CADS 0.25'] and list(r['table'].index[:3]) == ['linear decoder (ridge)', *r['labels']]
    assert (r['table'].loc[r['labels'], 'seconds'] > 0).all() and (r['table'].loc[r['labels'], 'queries'] == 0).all()
    assert '| s = 2, CADS 0.25 |' in capsys.readouterr().out
