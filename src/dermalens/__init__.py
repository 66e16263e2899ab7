"""dermalens: a HAM10000 skin-lesion classifier for research and education.

Not a medical device: no output of this package is a diagnosis.
"""
__version__ = "0.1.0"

DISCLAIMER = (
    "dermalens is a research and education tool, not a medical device. Its output is not a "
    "diagnosis and must not guide treatment. Anyone worried about a skin lesion should see a "
    "dermatologist or another qualified clinician."
)
