"""nbs/index.ipynb from README.md, so that the README stays the README.

nbdev makes README.md from `readme_nb` (nbs/index.ipynb, also the docs' home page) when `nbdev_readme` or
`nbdev_prepare` runs. Our README is written as markdown; this tool copies it into index.ipynb, one markdown cell per
`## ` section, so that `nbdev_readme` renders the same content back instead of replacing it. `tests/test_notebooks.py`
fails when the two differ.

    python tools/readme_index.py            # write nbs/index.ipynb from README.md
    python tools/readme_index.py --check    # exit 1 when nbs/index.ipynb is not README.md's copy
"""
import argparse, hashlib, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sections(text: str) -> list[str]:
    "The markdown split before every `## ` heading outside code fences (the first part holds the title)."
    parts, cur, fenced = [], [], False
    for line in text.splitlines(keepends=True):
        if line.startswith('```'): fenced = not fenced
        if line.startswith('## ') and not fenced and cur: parts.append(''.join(cur)); cur = []
        cur.append(line)
    if cur: parts.append(''.join(cur))
    return [p.rstrip('\n') for p in parts]


def index_notebook(readme: str) -> dict:
    "The notebook whose markdown cells are the README's sections (cell ids from their headings: stable across edits)."
    parts, seen = sections(readme), {}
    def cell_id(s: str) -> str:
        head = s.splitlines()[0]; seen[head] = seen.get(head, -1) + 1
        return hashlib.sha256(f'{head}/{seen[head]}'.encode()).hexdigest()[:8]
    cells = [dict(cell_type='markdown', id=cell_id(s), metadata={}, source=s.splitlines(keepends=True)) for s in parts]
    meta = dict(kernelspec=dict(display_name='python3', language='python', name='python3'))
    return dict(cells=cells, metadata=meta, nbformat=4, nbformat_minor=5)


def render(nb: dict) -> str: return json.dumps(nb, indent=1, ensure_ascii=False) + '\n'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='exit 1 when nbs/index.ipynb is not the copy of README.md')
    a = p.parse_args(argv)
    want, path = render(index_notebook((ROOT/'README.md').read_text())), ROOT/'nbs'/'index.ipynb'
    if a.check:
        if path.is_file() and path.read_text() == want: return 0
        print(f"{path} is not README.md's copy: run python tools/readme_index.py", file=sys.stderr)
        return 1
    path.write_text(want)
    return 0


if __name__ == '__main__': sys.exit(main())
