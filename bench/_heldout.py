"""What the benches that attack the demo's model share (queries.py, cads.py): its held-out people, a bundle and the judge."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def quick_preset():
    "A miniature of the demo's recipe for `--quick` (a tiny U-Net, 150 images): checks that every step runs."
    from id3pm_nb.cli.demo import DemoPreset
    return DemoPreset('quick', {'preset': 'tiny', 'ch': 16, 'head_ch': 16, 'patch': 2, 'attn_res': (8,), 'prior_rank': 8},
                      32, 150, 8, 2e-3, 0.05, precision='bf16')


def held_out(a, log, queried: bool) -> SimpleNamespace:
    """The demo's split of LFW (its preset, or `quick_preset` with --quick and at most 3 people), the bundle at --bundle
    (else the demo's recipe trained into --out), the FaceNet judge (refused if it took part: `queried` when the bench
    queries the bundle's recognizer) and the held-out people's ID vectors."""
    from id3pm_nb.core import default_device, seed_everything
    from id3pm_nb.cli.demo import demo_data, demo_key, demo_preset, demo_train, heldout_people
    from id3pm_nb.data.dataset import holdout_split
    from id3pm_nb.eval.evaluate import check_judge, lfw_judge
    from id3pm_nb.data.lfw import find_lfw
    from id3pm_nb.use.pipeline import ID3PM
    dev, out, root = default_device(a.device), Path(a.out), find_lfw(a.lfw, download=False)
    out.mkdir(parents=True, exist_ok=True); seed_everything(a.seed)
    pre = quick_preset() if a.quick else demo_preset('cpu')
    people = min(a.people, 3) if a.quick else a.people
    P = demo_data(root, pre, a.seed, a.cache, log=log, progress=False)
    split = holdout_split(P.identities, people, seed=a.seed)
    bundle = Path(a.bundle or 'id3pm_demo/bundle')
    if a.quick or not (bundle/'bundle.json').is_file():
        key = demo_key(pre, people, a.seed, P.fingerprint, P.ids.shape[1])
        bundle = demo_train(P, split, pre, out/'runs'/key, out/'bundle', dev, log, progress=False)
    pipe = ID3PM.from_bundle(bundle, device=dev)
    judge = lfw_judge('facenet', root, cache=a.cache, per_fold=3 if a.quick else 30)
    check_judge(judge, pipe.fingerprint, pipe.recognizer.fingerprint if queried else None)
    held = heldout_people(P, split, pre.size, judge, pipe.recognizer, log=log)
    return SimpleNamespace(out=out, pre=pre, P=P, split=split, bundle=bundle, pipe=pipe, judge=judge, held=held,
                           ids=np.asarray(P.ids)[held.first])
