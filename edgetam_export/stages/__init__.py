"""EdgeTAM cut into static-shape stages: four for images and tracking, one for mask prompts on video.

`spec` holds the contracts (importable without transformers, for the runtime); `registry` holds
the stage definitions (contract, export wrapper, upstream computation), one module per stage.
"""
