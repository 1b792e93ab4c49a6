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
