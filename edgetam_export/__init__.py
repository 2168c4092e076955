"""edgetam-export: ship EdgeTAM from its transformers reference to ExecuTorch, Core ML and ONNX bundles.

Data flows one way: reference -> stages -> backends -> bundle -> runtime.
"""

import logging

# torch prints registration warnings for torchao enums (imported by executorch) on every start.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

__version__ = "0.1.0"
