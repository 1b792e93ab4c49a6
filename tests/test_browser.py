"""The explorer tutorial in a real browser. Voilà serves `nbs/tutorials/explore.ipynb` on localhost; its kernel runs the
notebook on a tiny bundle made here (the untrained Gaussian-prior model of `bench/directions.py --quick`, fitted on a
few LFW people, so it needs no trained model). Headless Chromium (Debian's package, which `.ci/setup` installs) opens
the page through Playwright; the test moves the alpha slider with the mouse and checks that the displayed face
changes, uploads a photo and checks that it becomes a new identity, then shuts browser, server and kernel down."""
import importlib.util, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT/'nbs'/'tutorials'/'explore.ipynb'
CHROMIUM = os.environ.get('ID3PM_CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-quic']   # no network: nothing but localhost is reachable
PAGE_TIMEOUT = 240   # seconds for the kernel to run the notebook (imports, prepare, labels, the first sample)


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _requirements():
    "Everything the test needs, or a failure that names the set-up step (never a skip)."
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `bash .ci/setup` (it installs Debian's chromium with apt-get), or set ID3PM_CHROMIUM")
    for mod, pkg in (('playwright', 'playwright'), ('voila', 'voila')):
        if importlib.util.find_spec(mod) is None: pytest.fail(f"{pkg} is not installed: run `bash .ci/setup` (it installs the dev extra)")
    lfw = os.environ.get('ID3PM_LFW')
    if not lfw or not Path(lfw).is_dir(): pytest.fail("set ID3PM_LFW to the LFW folder (with lfw-deepfunneled/)")
    return Path(lfw)


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "Voilà serving the tutorial on a tiny bundle; yields the page URL and the server's log file."
    lfw = _requirements()
    tmp = tmp_path_factory.mktemp('browser')
    spec = importlib.util.spec_from_file_location('bench_directions', ROOT/'bench'/'directions.py')
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    bundle = bench.tiny_bundle(lfw, tmp/'bundle', cache=tmp/'cache'/'prepared')      # the notebook's prepare finds these photos cached
    port, log = _free_port(), open(tmp/'voila.log', 'w')
    env = {**os.environ, 'ID3PM_BUNDLE': str(bundle), 'ID3PM_CACHE': str(tmp/'cache'), 'ID3PM_EXPLORE_PEOPLE': '10', 'OMP_NUM_THREADS': '1'}
    env.pop('MPLBACKEND', None)                                                       # figures inline, as a user sees them
    server = subprocess.Popen([sys.executable, '-m', 'voila', str(NOTEBOOK), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                               '--show_tracebacks=True', '--VoilaExecutor.timeout=600'],
                              cwd=NOTEBOOK.parent, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.time()
        while True:
            try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            except OSError:
                if server.poll() is not None or time.time() - t0 > 60: pytest.fail(f"Voilà did not start:\n{(tmp/'voila.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield f'http://127.0.0.1:{port}/', tmp/'voila.log'
    finally:
        os.killpg(server.pid, signal.SIGTERM)                       # the server and the kernel it started
        try: server.wait(timeout=20)
        except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL); server.wait()
        log.close()


def test_explorer_in_a_browser(served, tmp_path):
    from playwright.sync_api import sync_playwright
    url, log = served
    photo = sorted((Path(os.environ['ID3PM_LFW'])/'lfw-deepfunneled'/'Hugo_Chavez').glob('*.jpg'))[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1200, 'height': 1400})
            page.goto(url, timeout=PAGE_TIMEOUT * 1000)
            try: page.wait_for_selector('.id3pm-image img, img.id3pm-image', timeout=PAGE_TIMEOUT * 1000)
            except Exception:
                page.screenshot(path=str(tmp_path/'page.png'))
                pytest.fail(f"the explorer did not appear (screenshot {tmp_path/'page.png'}); page text:\n{page.inner_text('body')[-3000:]}\n"
                            f"server log:\n{log.read_text()[-3000:]}")
            image, info = page.locator('.id3pm-image').first, page.locator('.id3pm-info').first
            def shown() -> bytes: return image.screenshot()
            def changed(before: bytes, what: str, timeout: float = 60):
                t0 = time.time()
                while shown() == before:
                    if time.time() - t0 > timeout: pytest.fail(f"the displayed image did not change after {what}")
                    page.wait_for_timeout(250)
            # pick the 'female' direction, then drag the alpha slider's handle to the right
            page.locator('.id3pm-direction select').select_option('female')
            page.wait_for_function("document.querySelector('.id3pm-info').innerText.startsWith('female:')", timeout=60_000)
            before = shown()
            handle, track = page.locator('.id3pm-alpha .noUi-handle'), page.locator('.id3pm-alpha .noUi-base').bounding_box()
            hb = handle.bounding_box()
            page.mouse.move(hb['x'] + hb['width'] / 2, hb['y'] + hb['height'] / 2); page.mouse.down()
            page.mouse.move(track['x'] + track['width'] * 0.95, hb['y'] + hb['height'] / 2, steps=8); page.mouse.up()
            changed(before, 'moving the alpha slider')
            readout = page.locator('.id3pm-alpha .widget-readout').inner_text()
            assert float(readout) > 1.5, f"the alpha slider reads {readout} after the drag"
            assert 'female: projection' in info.inner_text() and 'data std' in info.inner_text(), info.inner_text()
            # upload a photo: it becomes the picked identity, and the face changes
            before = shown()
            with page.expect_file_chooser() as chooser: page.locator('.id3pm-upload').first.click()   # the button, as a user would
            chooser.value.set_files(str(photo))
            page.wait_for_function(f"document.querySelector('.id3pm-identity select').value === {photo.name!r}", timeout=60_000)
            options = page.locator('.id3pm-identity select option').all_inner_texts()
            assert photo.name in options and len(options) >= 2, options
            changed(before, 'uploading a photo')
            page.screenshot(path=str(tmp_path/'explorer.png'))
        finally:
            browser.close()
