"""dermalens: a HAM10000 skin-lesion classifier for research and education.

Not a medical device: no output of this package is a diagnosis.
"""
import os

# numpy's OpenBLAS threads spin after each call and steal the cores onnxruntime is using;
# dermalens' numpy work is small (one 1280x1280 product per image), so one thread is best.
# Set before numpy is first imported; an explicit setting by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

# The bundle `make serve`, the API, the GUI and the benchmarks load unless told otherwise.
DEFAULT_MODEL = "models/dermalens"

DISCLAIMER = (
    "dermalens is a research and education tool, not a medical device. Its output is not a "
    "diagnosis and must not guide treatment. Anyone worried about a skin lesion should see a "
    "dermatologist or another qualified clinician."
)
