"""EdgeTAM cut into four static-shape stages.

`spec` holds the contracts (importable without transformers, for the runtime); `registry` holds
the stage definitions (contract, export wrapper, upstream computation), one module per stage.
"""
