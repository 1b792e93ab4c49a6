"""Packaging for id3pm_nb: everything comes from settings.ini, which nbdev also reads."""
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
c = cfg['DEFAULT']

def _reqs(key): return c.get(key, '').split()

def _scripts(): return [s.strip() for s in c.get('console_scripts', '').splitlines() if s.strip()]

readme = Path(__file__).parent/'README.md'
setuptools.setup(
    name=c['lib_name'], version=c['version'], description=c['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else '',
    long_description_content_type='text/markdown',
    author=c['author'], author_email=c['author_email'], license='Apache-2.0', url=c['git_url'],
    keywords=c['keywords'].split(), python_requires=f">={c['min_python']}",
    packages=setuptools.find_packages(include=[c['lib_path'], c['lib_path'] + '.*']),
    include_package_data=True, zip_safe=False,
    install_requires=_reqs('requirements'),
    # onnxruntime and onnxruntime-gpu install into the same folder: choose exactly one extra.
    extras_require={'cpu': _reqs('cpu_requirements'), 'gpu': _reqs('gpu_requirements'), 'dev': _reqs('dev_requirements'),
                    'attrs': _reqs('attrs_requirements')},
    entry_points={'console_scripts': _scripts(), 'nbdev': [f"{c['lib_path']}={c['lib_path']}._modidx:d"]},
)
