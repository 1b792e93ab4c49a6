"Checks of id3pm_nb.fr.recognizer that live outside the notebook: the embed benchmark's command line runs end to end."
import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1]/'bench'/'embed.py'


def _bench():
    spec = importlib.util.spec_from_file_location('bench_embed', BENCH)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_bench_embed_cli(capsys):
    "`bench/embed.py --what embed` times both offline recognizers on real LFW faces and prints a ratio for each."
    _bench().main(['--what', 'embed', '--n', '6', '--bs', '3'])
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.startswith(('dlib_resnet_v1-', 'facenet_vggface2-'))]
    assert len(rows) == 2, out
    for r in rows:
        batched, single, ratio = r.split()[1:]
        assert float(batched) > 0 and float(single) > 0
        np.testing.assert_allclose(float(ratio[:-1]), float(batched) / float(single), rtol=0.1)   # the printed figures are rounded
