__version__ = "0.1.0"

import warnings
# fastai.layers calls torch.jit.script at import, which torch 2.14 deprecates:
# a warning nobody using this library can act on
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
