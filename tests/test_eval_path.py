"""One evaluation path (issue 21 item 4): the demo's judge (`Judge` -> `inversion_scores` / `judged_scores`) and
`id3pm_eval`'s `evaluate_generator` score the same samples with the same function (`evaluate.identity_scores`) and give
identical numbers: cosine, SAR at each FMR, their 95% intervals over people, faces found. A tiny torch recognizer with a
stub detector stands in for the real ones, so no LFW is needed."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from id3pm_nb.fr.align import ffhq_kps
from id3pm_nb.eval.evalset import EvalData, standin_generator
from id3pm_nb.eval.evaluate import (EvalProtocol, Judge, data_judge, evaluate_generator, generate_samples, identity_scores,
                               inversion_scores, judged_scores, reference_scores)
from id3pm_nb.fr.recognizer import TorchRecognizer, cosine

N_PEOPLE, PER_PERSON, SIZE, N_SAMPLES = 24, 5, 32, 3


class StubDetector:
    "Finds a face (at the FFHQ landmarks) in any image that is not flat."
    name = 'stub'
    def detect(self, img):
        return [SimpleNamespace(kps=ffhq_kps(img.shape[0]))] if img.std() > 2 else []


def stub_recognizer() -> TorchRecognizer:
    "A fixed random linear map of 16 px crops, through the real `Recognizer` crop/embed code, with the stub detector."
    torch.manual_seed(0)
    rec = TorchRecognizer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 16)), input_size=(16, 16),
                          name='stub')
    rec.detector_name, rec._detector = 'stub', StubDetector()
    return rec


def stub_data(rec) -> EvalData:
    "24 people x 5 photos: photos 0-2 in pairs (some people are the source of two genuine pairs), 3-4 the gallery."
    rng = np.random.default_rng(0)
    names = [f'person{i:02d}' for i in rng.permutation(N_PEOPLE)]      # bootstrap units sort differently from the rows
    crops, identities, paths = [], [], []
    for p, name in enumerate(names):
        face = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((SIZE // 4, SIZE // 4, 1)))
        for j in range(PER_PERSON):
            crops.append(np.clip(face + rng.normal(0, 40, face.shape), 0, 255).astype(np.uint8))
            identities.append(name)
            paths.append(f'{name}/{j}.jpg')
    crops = np.stack(crops)
    crops[3 * PER_PERSON + 3] = 128                                     # one flat gallery image: no face found in it
    row = lambda p, j: p * PER_PERSON + j
    pairs = []
    for p in range(N_PEOPLE):
        pairs.append((row(p, 0), row(p, 1), True, p % 4))
        if p % 2: pairs.append((row(p, 2), row(p, 1), True, p % 4))   # a second source of the same person
        pairs.append((row(p, 2), row((p + 1) % N_PEOPLE, 1), False, p % 4))
    table = pd.DataFrame(pairs, columns=['a', 'b', 'same', 'fold'])
    gallery = ~np.isin(np.arange(len(crops)), table[['a', 'b']].to_numpy().ravel())
    return EvalData(np.array(paths), np.array(identities), crops, {'stub': rec.embed_images(crops, progress=False)},
                    table, gallery, source='synthetic')


@pytest.fixture(scope='module')
def setup():
    torch.set_num_threads(1)
    rec = stub_recognizer()
    return rec, stub_data(rec)


@pytest.mark.parametrize('align', ['detect', 'fixed'])
def test_demo_judge_and_id3pm_eval_give_the_same_numbers(setup, align):
    rec, data = setup
    gen = standin_generator(data, 'stub', 'same')
    res = evaluate_generator(gen, data, {'stub': rec}, 'stub', EvalProtocol(n_samples=N_SAMPLES, align=align))
    m, real = res.summary['runs'][0]['fr']['stub'], res.summary['real']['stub']
    pairs = data.pairs[data.pairs.same]
    src = np.unique(pairs.a.to_numpy())
    assert len(set(data.identities[src])) < len(src)                    # several sources of one person: one unit each

    # the demo's side: a judge with the same thresholds, the same samples, its own scoring function
    judge = data_judge(rec, data, 'stub', fmr=1e-2, strict=1e-3, align=align)
    assert judge.threshold == real['thresholds']['0.01'] and judge.strict == (1e-3, real['thresholds']['0.001'])
    assert judge.n_impostor == real['n_impostor']
    samples = generate_samples(gen, data.emb['stub'][src], N_SAMPLES, 0).swapaxes(0, 1)   # (n_src, S, H, W, 3)
    demo = inversion_scores(judge, samples, data.emb['stub'][src], people=data.identities[src])

    assert demo['cos'] == m['cos_mean'] and [demo['cos_lo'], demo['cos_hi']] == m['cos_ci']
    assert demo['sar'] == m['sar_type1']['0.01'] and [demo['sar_lo'], demo['sar_hi']] == m['sar_type1_ci']['0.01']
    assert demo['sar@0.001'] == m['sar_type1']['0.001']
    assert [demo['sar@0.001_lo'], demo['sar@0.001_hi']] == m['sar_type1_ci']['0.001']
    assert demo['found'] == m['found'] and 0 < demo['found'] < 1          # the flat gallery image is no face, either way
    assert 0 < demo['sar'] < 1 and demo['cos_lo'] < demo['cos'] < demo['cos_hi']   # numbers worth comparing

    # type II (against the pair's second photo) is the same function on other targets
    E = judge.embed(samples.reshape(-1, *samples.shape[2:]))[0].reshape(len(src), N_SAMPLES, -1)
    k = np.searchsorted(src, pairs.a.to_numpy())
    att2 = cosine(E[k], np.broadcast_to(data.emb['stub'][pairs.b.to_numpy()][:, None], E[k].shape))
    two = judged_scores(judge, att2, people=data.identities[pairs.a.to_numpy()])
    assert two['sar'] == m['sar_type2']['0.01'] and [two['sar_lo'], two['sar_hi']] == m['sar_type2_ci']['0.01']


def test_identity_scores_units_are_people():
    cos = np.random.default_rng(1).uniform(-.2, .9, (12, 3))
    thr = {1e-2: .4, 1e-3: .6}
    people = np.repeat(['b', 'a', 'c', 'd'], 3)                          # 4 people, 3 targets each
    by_person, by_target = identity_scores(cos, thr, people), identity_scores(cos, thr)
    assert by_person['cos'] == by_target['cos'] and by_person['sar'] == by_target['sar']
    assert by_person['cos_ci'] != by_target['cos_ci']                    # resampling people, not targets
    assert identity_scores(cos, thr, np.arange(12)) == by_target         # None: each target its own unit
    judge = Judge(None, thr[1e-2], 1e-2, strict=(1e-3, thr[1e-3]))
    row = judged_scores(judge, cos, people=people)
    assert row['sar'] == by_person['sar']['0.01'] and row['sar@0.001'] == by_person['sar']['0.001']
    assert [row['cos_lo'], row['cos_hi']] == by_person['cos_ci']


def test_reference_rows_use_the_same_units(setup):
    rec, data = setup
    judge = data_judge(rec, data, 'stub')
    t, s = data.emb['stub'][0::PER_PERSON], data.emb['stub'][1::PER_PERSON]   # first and second photo of each person
    people = data.identities[0::PER_PERSON]
    crops = data.crops[0::PER_PERSON]
    refs = reference_scores(judge, crops, t, s, data.emb['stub'][3::PER_PERSON], people=people)
    other = identity_scores(cosine(s, t)[:, None], judge.thresholds, people)
    row = refs['another photo, same person']
    assert row['cos'] == other['cos'] and [row['cos_lo'], row['cos_hi']] == other['cos_ci']
    assert row['sar'] == other['sar']['0.01']
