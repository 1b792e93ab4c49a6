"`id3pm_nb.data.prepare.prepare` on real LFW faces with the dlib black box: bad input, strict mode, resuming, and rerun cost."
import copy, hashlib, importlib.util, json, multiprocessing, os, shutil
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from id3pm_nb.data.prepare import PrepareError, Workers, prepare
from id3pm_nb.data.store import load_prepared
from id3pm_nb.data.dataset import read_image
from id3pm_nb.fr.detect import DlibDetector, get_detector
from id3pm_nb.fr.recognizer import cosine, load_recognizer

GOOD = ['Aaron_Peirsol_0001', 'Abdullah_Gul_0001', 'Alejandro_Toledo_0001', 'Amelie_Mauresmo_0001', 'Angela_Bassett_0001',
        'Ann_Veneman_0001', 'Arnold_Schwarzenegger_0001', 'Colin_Powell_0001']
BIG, SMALL = 'Bill_Gates_0001', 'Halle_Berry_0001'   # pasted side by side, the first one larger
SIZES = (32, 64)

@pytest.fixture(scope='session')
def lfw() -> Path:
    p = os.environ.get('ID3PM_LFW')
    if not p: pytest.fail("set ID3PM_LFW to the LFW folder (holding lfw-deepfunneled/<Name>/<Name>_0001.jpg), e.g. ../shared/data/lfw")
    root = Path(p).expanduser()/'lfw-deepfunneled'
    if not root.is_dir(): pytest.fail(f"ID3PM_LFW={p} has no lfw-deepfunneled/ folder")
    return root

def lfw_file(lfw: Path, stem: str) -> Path: return lfw/stem.rsplit('_', 1)[0]/f'{stem}.jpg'

@pytest.fixture(scope='session')
def models():
    return get_detector('dlib'), load_recognizer('dlib')

def counted(o, meth: str, fail_after: int | None = None, exc=RuntimeError):
    "Shallow copy of `o` whose `meth` logs the images of each call in `.calls` (raising `exc` once `fail_after` is passed)."
    c, f = copy.copy(o), getattr(o, meth); c.calls = []
    def wrapped(x, *a, **kw):
        n = len(x) if meth == 'embed' else 1
        if fail_after is not None and sum(c.calls) + n > fail_after: raise exc(f'simulated failure in {meth}')
        c.calls.append(n); return f(x, *a, **kw)
    setattr(c, meth, wrapped); return c

def statuses(p) -> dict: return {Path(r.path).name: r.status for r in p.report.itertuples()}

@pytest.fixture(scope='session')
def messy(lfw, tmp_path_factory) -> Path:
    "A flat folder of good faces and every kind of bad input, built from real LFW photos."
    d = tmp_path_factory.mktemp('messy')
    for s in GOOD[:4]: shutil.copy(lfw_file(lfw, s), d/f'{s}.jpg')
    shutil.copy(lfw_file(lfw, GOOD[0]), d/'zz_duplicate.jpg')                      # same bytes as GOOD[0]
    data = lfw_file(lfw, GOOD[1]).read_bytes()
    (d/'corrupt_truncated.jpg').write_bytes(data[:len(data)//3])
    (d/'corrupt_garbage.jpg').write_bytes(data[:20] + np.random.default_rng(0).bytes(3000))
    (d/'empty.jpg').write_bytes(b'')
    (d/'text_renamed.jpg').write_text('this is a text file with an image name\n')
    face = Image.open(lfw_file(lfw, GOOD[2])).convert('RGB'); grey = np.asarray(face.convert('L'))
    face.convert('L').save(d/'mode_L.png'); face.convert('LA').save(d/'mode_LA.png'); face.convert('RGBA').save(d/'mode_RGBA.png')
    face.convert('CMYK').save(d/'mode_CMYK.jpg'); face.quantize(256).save(d/'mode_P.png')
    Image.fromarray(grey.astype(np.uint16) * 257).save(d/'mode_I16.png')
    face.resize((10, 10)).save(d/'tiny.png')
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(d/'noise.png')
    Image.new('RGB', (200, 200), (200, 180, 160)).save(d/'flat.png')
    a, b = Image.open(lfw_file(lfw, BIG)).resize((300, 300)), Image.open(lfw_file(lfw, SMALL)).resize((220, 220))
    two = Image.new('RGB', (520, 300), (128, 128, 128)); two.paste(a, (0, 0)); two.paste(b, (300, 40)); two.save(d/'two_faces.jpg')
    return d

EXPECTED = {**{f'{s}.jpg': 'ok' for s in GOOD[:4]}, 'zz_duplicate.jpg': 'duplicate',
            'corrupt_truncated.jpg': 'unreadable', 'corrupt_garbage.jpg': 'unreadable', 'empty.jpg': 'unreadable',
            'text_renamed.jpg': 'not_an_image', 'mode_L.png': 'ok', 'mode_LA.png': 'ok', 'mode_RGBA.png': 'ok',
            'mode_CMYK.jpg': 'ok', 'mode_P.png': 'ok', 'mode_I16.png': 'ok', 'tiny.png': 'too_small',
            'noise.png': 'no_face', 'flat.png': 'no_face', 'two_faces.jpg': 'multi_face'}

@pytest.fixture(scope='session')
def messy_run(messy, models, tmp_path_factory):
    det, rec = models; out = tmp_path_factory.mktemp('messy_cache')
    return prepare(messy, out, rec, det, sizes=SIZES, progress=False, verbose=False), out

def test_every_bad_input_gets_its_status(messy_run):
    p, _ = messy_run
    assert statuses(p) == EXPECTED
    good = [k for k, v in EXPECTED.items() if v in ('ok', 'multi_face')]
    assert len(p) == len(good) and sorted(Path(x).name for x in p.paths) == sorted(good)
    assert p.crops[32].shape == (len(good), 32, 32, 3) and p.crops[64].dtype == np.uint8
    assert p.ids.shape == (len(good), 128) and p.ids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p.ids, axis=1), 1, atol=1e-4)

def test_one_clear_line_per_problem(messy_run, messy):
    p, _ = messy_run
    lines = {Path(l.split(': ')[0]).name: l for l in p.problems()}
    assert set(lines) == {k for k, v in EXPECTED.items() if v != 'ok'}
    assert lines['zz_duplicate.jpg'].endswith(f'same bytes as {messy/(GOOD[0] + ".jpg")}')
    assert 'empty file' in lines['empty.jpg'] and 'truncated' in lines['corrupt_truncated.jpg']
    assert 'not an image file' in lines['text_renamed.jpg'] and '10x10 px' in lines['tiny.png']
    assert 'no face detected' in lines['noise.png'] and '2 faces, kept the largest' in lines['two_faces.jpg']

def test_original_modes_recorded(messy_run):
    p, _ = messy_run
    modes = {Path(r.path).name: r.mode for r in p.report.itertuples()}
    assert [modes[f'mode_{m}.{e}'] for m, e in [('L', 'png'), ('LA', 'png'), ('RGBA', 'png'), ('CMYK', 'jpg'), ('P', 'png'), ('I16', 'png')]] \
        == ['L', 'LA', 'RGBA', 'CMYK', 'P', 'I;16']

def test_largest_face_kept(messy_run, lfw, models):
    p, _ = messy_run; det, rec = models
    n = p.report.set_index(p.report.path.map(lambda s: Path(s).name)).loc['two_faces.jpg', 'n_faces']
    assert n == 2
    v = p.ids[[Path(x).name for x in p.paths].index('two_faces.jpg')]
    ref = {}
    for s in (BIG, SMALL):
        img = np.asarray(Image.open(lfw_file(lfw, s)).convert('RGB'))
        ref[s] = rec.embed(rec.crop(img, det.detect(img)[0].kps)[None], progress=False)[0]
    assert cosine(v, ref[BIG]) > 0.95 > cosine(v, ref[SMALL])

def test_rerun_does_no_work(messy_run, messy, models):
    p, out = messy_run; det, rec = models
    cdet, crec = counted(det, 'detect'), counted(rec, 'embed')
    p2 = prepare(messy, out, crec, cdet, sizes=SIZES, progress=False, verbose=False)
    assert cdet.calls == [] and crec.calls == []
    np.testing.assert_array_equal(p2.ids, p.ids); np.testing.assert_array_equal(p2.crops[64], p.crops[64])
    assert statuses(p2) == EXPECTED and not list((p2.root/'pending').iterdir())
    lp = load_prepared(out)
    np.testing.assert_array_equal(lp.ids, p.ids); assert list(lp.paths) == list(p.paths)

def test_changed_file_is_redone_alone(messy, lfw, models, tmp_path):
    det, rec = models; d = tmp_path/'src'; shutil.copytree(messy, d)
    prepare(d, tmp_path/'out', rec, det, sizes=SIZES, progress=False, verbose=False)
    shutil.copy(lfw_file(lfw, GOOD[5]), d/f'{GOOD[1]}.jpg')        # new content under an old name
    cdet, crec = counted(det, 'detect'), counted(rec, 'embed')
    p = prepare(d, tmp_path/'out', crec, cdet, sizes=SIZES, progress=False, verbose=False)
    assert len(cdet.calls) == 1 and sum(crec.calls) == 1 and statuses(p) == EXPECTED

@pytest.fixture
def four(lfw, tmp_path) -> Path:
    "Faces a, b, then a flat image c, then face d."
    d = tmp_path/'four'; d.mkdir()
    for k, s in zip('abd', GOOD[:3]): shutil.copy(lfw_file(lfw, s), d/f'{k}.jpg')
    Image.new('RGB', (200, 200), (90, 90, 90)).save(d/'c.png')
    return d

def test_strict_raises_naming_the_file_and_keeps_finished_work(four, models, tmp_path):
    det, rec = models
    with pytest.raises(PrepareError, match=r'c\.png: no_face'):
        prepare(four, tmp_path/'out', rec, det, sizes=SIZES, strict=True, progress=False, verbose=False)
    cdet, crec = counted(det, 'detect'), counted(rec, 'embed')
    with pytest.raises(PrepareError, match=r'c\.png: no_face'):       # known from the cache: stops before any work
        prepare(four, tmp_path/'out', crec, cdet, sizes=SIZES, strict=True, progress=False, verbose=False)
    assert cdet.calls == [] and crec.calls == []
    p = prepare(four, tmp_path/'out', crec, cdet, sizes=SIZES, progress=False, verbose=False)
    assert len(cdet.calls) == 1 and sum(crec.calls) == 1                # only d.jpg was new
    assert statuses(p) == {'a.jpg': 'ok', 'b.jpg': 'ok', 'c.png': 'no_face', 'd.jpg': 'ok'}

def test_strict_statuses_and_duplicates(messy, models, tmp_path):
    det, rec = models
    with pytest.raises(PrepareError, match='zz_duplicate.jpg: duplicate'):
        prepare(messy, tmp_path/'out', rec, det, sizes=SIZES, strict='duplicate', progress=False, verbose=False)
    with pytest.raises(ValueError, match="strict='blurry'"):
        prepare(messy, tmp_path/'out', rec, det, sizes=SIZES, strict='blurry', progress=False, verbose=False)

@pytest.fixture
def eight(lfw, tmp_path) -> Path:
    d = tmp_path/'eight'; d.mkdir()
    for s in GOOD: shutil.copy(lfw_file(lfw, s), d/f'{s}.jpg')
    return d

@pytest.mark.parametrize('where', ['embed', 'detect'])
def test_interrupted_run_resumes_without_redoing_or_losing(eight, models, tmp_path, where):
    det, rec = models; out = tmp_path/'out'
    clean = prepare(eight, tmp_path/'clean', rec, det, sizes=SIZES, progress=False, verbose=False)
    if where == 'embed': bdet, brec = det, counted(rec, 'embed', fail_after=4)            # 3rd shard of 2 fails
    else: bdet, brec = counted(det, 'detect', fail_after=5, exc=KeyboardInterrupt), rec    # Ctrl-C on the 6th image
    with pytest.raises((RuntimeError, KeyboardInterrupt), match='simulated failure'):
        prepare(eight, out, brec, bdet, sizes=SIZES, workers=Workers(chunk=2), progress=False, verbose=False)
    saved = 4 if where == 'embed' else 5          # shards written before the failure (a Ctrl-C flushes the half shard)
    assert json.loads((next(out.iterdir())/'manifest.json').read_text())['n_rows'] == saved   # committed on the way out
    cdet, crec = counted(det, 'detect'), counted(rec, 'embed')
    p = prepare(eight, out, crec, cdet, sizes=SIZES, workers=Workers(chunk=2), progress=False, verbose=False)
    assert len(cdet.calls) == 8 - saved and sum(crec.calls) == 8 - saved
    assert len(p) == 8 and set(p.report.status) == {'ok'}
    order = np.argsort(p.paths); ref = np.argsort(clean.paths)
    np.testing.assert_allclose(p.ids[order], clean.ids[ref], atol=1e-5)
    np.testing.assert_array_equal(p.crops[64][order], clean.crops[64][ref])

def test_unfinished_run_leaves_last_finished_result(eight, four, models, tmp_path):
    det, rec = models; out = tmp_path/'out'
    first = prepare(four, out, rec, det, sizes=SIZES, progress=False, verbose=False)
    with pytest.raises(RuntimeError):
        prepare(eight, out, counted(rec, 'embed', fail_after=2), det, sizes=SIZES, workers=Workers(chunk=2), progress=False, verbose=False)
    lp = load_prepared(out)
    assert list(lp.paths) == list(first.paths); np.testing.assert_array_equal(lp.ids, first.ids)

def test_cache_holds_every_finished_run(eight, four, models, tmp_path):
    "A second run with other files adds to the cache: `load_prepared` returns both runs' faces, each face once."
    det, rec = models; out = tmp_path/'out'
    first = prepare(four, out, rec, det, sizes=SIZES, progress=False, verbose=False)
    second = prepare(eight, out, rec, det, sizes=SIZES, progress=False, verbose=False)
    lp = load_prepared(out)
    same_bytes = {str(eight/f'{s}.jpg'): str(four/f'{k}.jpg') for k, s in zip('abd', GOOD[:3])}   # first seen in `four`
    assert set(lp.paths) == (set(second.paths) - set(same_bytes)) | set(same_bytes.values())
    assert len(lp) == len(second) and len(lp.report) == len(first.report) + len(second.report)
    assert statuses(load_prepared(out, four)) == statuses(first) and list(load_prepared(out, eight).paths) == list(second.paths)
    with pytest.raises(FileNotFoundError, match='are not in'): load_prepared(out, [tmp_path/'never_prepared.jpg'])

def _crash_after(k: int, src: Path, out: Path) -> None:
    "In a child process: prepare `src` and die hard (no cleanup, no flush) when the detector is called the (k+1)-th time."
    import torch
    torch.set_num_threads(1)   # a forked child must not use the parent's OpenMP thread pool (libgomp is not fork-safe)
    det, rec = get_detector('dlib'), load_recognizer('dlib')
    c, f = copy.copy(det), det.detect; c.calls = []
    def detect(img):
        if len(c.calls) == k: os._exit(3)
        c.calls.append(1); return f(img)
    c.detect = detect
    prepare(src, out, rec, c, sizes=SIZES, workers=Workers(1, chunk=2), progress=False, verbose=False)   # the in-process path

def test_hard_crash_resumes_from_pending_shards(eight, models, tmp_path):
    det, rec = models; out = tmp_path/'out'
    proc = multiprocessing.get_context('fork').Process(target=_crash_after, args=(5, eight, out)); proc.start(); proc.join(120)
    assert proc.exitcode == 3
    root = next(out.iterdir())
    assert len(list(root.glob('pending/*.npz'))) == 2 and not (root/'manifest.json').exists()   # 4 faces in 2 shards, none committed
    assert (root/'.lock').exists()                                                             # left by the dead process
    cdet, crec = counted(det, 'detect'), counted(rec, 'embed')
    p = prepare(eight, out, crec, cdet, sizes=SIZES, workers=Workers(chunk=2), progress=False, verbose=False)
    assert len(cdet.calls) == 4 and sum(crec.calls) == 4                                       # the 5th face was lost in the crash, not more
    assert len(p) == 8 and set(p.report.status) == {'ok'} and not list(root.glob('pending/*.npz'))
    np.testing.assert_allclose(np.linalg.norm(p.ids, axis=1), 1, atol=1e-4)


class ExitOn(DlibDetector):
    "A dlib detector whose process dies at once (no cleanup) on one image: a worker that crashes mid-run."
    def __init__(self, img): super().__init__(); self._key = hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()
    def detect(self, img):
        if hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest() == self._key: os._exit(3)
        return super().detect(img)

def test_crashed_worker_stops_the_run_and_a_rerun_resumes(eight, models, tmp_path):
    det, rec = models; out = tmp_path/'out'; k = 5
    clean = prepare(eight, tmp_path/'clean', rec, det, sizes=SIZES, workers=1, progress=False, verbose=False)
    with pytest.raises(BrokenProcessPool):
        prepare(eight, out, rec, ExitOn(read_image(sorted(eight.iterdir())[k])[0]), sizes=SIZES, workers=Workers(2, chunk=2), progress=False, verbose=False)
    root = next(out.iterdir())
    saved = len(json.loads((root/'manifest.json').read_text())['items'])
    assert 0 < saved <= k and not (root/'.lock').exists()           # files before the crash (all but those in flight) kept, lock released
    cdet, crec = counted(det, 'detect'), counted(rec, 'embed')       # (counted copies do not pickle: this rerun stays in-process)
    p = prepare(eight, out, crec, cdet, sizes=SIZES, workers=Workers(chunk=2), progress=False, verbose=False)
    assert len(cdet.calls) == 8 - saved and sum(crec.calls) == 8 - saved
    assert p.report.drop(columns='row').equals(clean.report.drop(columns='row'))
    np.testing.assert_array_equal(p.crops[64], clean.crops[64]); np.testing.assert_allclose(p.ids, clean.ids, atol=1e-6)

def test_bench_prepare_cli(lfw, capsys):
    "`bench/prepare.py` runs both paths on a few LFW images and prints their images/s, the ratio and that they agree."
    spec = importlib.util.spec_from_file_location('bench_prepare', Path(__file__).resolve().parents[1]/'bench'/'prepare.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    mod.main(['--images', '4', '--faces', '2', '--lfw', str(lfw.parent)])
    out = capsys.readouterr().out
    rows = {l.split(':')[0]: l.split()[-2:] for l in out.splitlines() if l.startswith(('old:', 'new:'))}
    assert set(rows) == {'old', 'new'} and all(float(x) > 0 for r in rows.values() for x in r), out
    assert 'same crops and report' in out and 'descriptor per face' in out, out
