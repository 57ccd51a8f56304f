"""Built-in, deterministic synthetic cardiac MRI in the ACDC and MM-WHS file layouts.

The bundles train on this data when no real dataset is configured, so it has to be small, quick to make,
bit-for-bit reproducible and hard enough that a segmentation network has something to learn.

Images are raw, un-normalised intensities (roughly 0..2000) made from piecewise-constant tissue classes with
texture, partial-volume blur, a multiplicative bias field and Rician noise. Patient ``k`` is drawn from
``np.random.default_rng([seed, k])``, so it does not depend on how many cases are generated. The parts:

* :mod:`~custom.data.synthetic.image_model`: texture, body and organs, the scanner, NIfTI files (both layouts).
* :mod:`~custom.data.synthetic.acdc`: short-axis cine patients in the ACDC layout (:func:`generate_acdc`).
* :mod:`~custom.data.synthetic.mmwhs`: 3D whole-heart volumes in the MM-WHS layout (:func:`generate_mmwhs`).
* :mod:`~custom.data.synthetic.cache`: :func:`ensure_dataset`, generation on first use.
* :mod:`~custom.data.synthetic.preview`: :func:`save_preview`, a PNG of a few cases with labels overlaid.

``python -m custom.data.synthetic --help`` for the command line (:mod:`~custom.data.synthetic.cli`).
"""

from custom.data.synthetic.acdc import ACDC_GROUPS, ACDC_LABELS, generate_acdc
from custom.data.synthetic.cache import GENERATOR_VERSION, LAYOUTS, ensure_dataset
from custom.data.synthetic.cli import main
from custom.data.synthetic.mmwhs import MMWHS_LABELS, generate_mmwhs
from custom.data.synthetic.preview import save_preview

__all__ = [
    "ACDC_LABELS",
    "ACDC_GROUPS",
    "MMWHS_LABELS",
    "GENERATOR_VERSION",
    "LAYOUTS",
    "generate_acdc",
    "generate_mmwhs",
    "ensure_dataset",
    "save_preview",
    "main",
]
