"""Risk levels from the malignancy score. The rules, in order:

1. indeterminate: the image failed the out-of-distribution gate; no assessment is given.
2. high: malignancy score >= the card's `high_risk` threshold (chosen on validation for
   specificity >= 0.95, never below the operating threshold).
3. moderate: operating threshold <= score < high_risk.
4. low: score < the operating threshold (chosen on validation for sensitivity >= 0.90).

So "low" is never shown for a score at or above the operating threshold.
"""
from __future__ import annotations

LEVELS = ("low", "moderate", "high", "indeterminate")

RECOMMENDATIONS = {
    "low": ("The model found no strong signs of malignancy. Keep an eye on the lesion (ABCDE: asymmetry, "
            "border, colour, diameter, evolution) and see a clinician if it changes, bleeds, itches or worries you."),
    "moderate": ("The model found some features associated with malignant lesions. Have the lesion examined "
                 "by a dermatologist in the coming weeks."),
    "high": ("The model found features strongly associated with malignant lesions. Please see a dermatologist "
             "promptly, ideally within two weeks."),
    "indeterminate": ("This image does not look like a colour dermoscopic image of a skin lesion (or it is "
                      "badly exposed), so no assessment is given. Use a sharp, evenly lit colour dermoscopic image "
                      "centred on the lesion."),
}

COLOURS = {"low": "#2e7d32", "moderate": "#ef6c00", "high": "#c62828", "indeterminate": "#616161"}


def risk_level(malignancy: float, threshold: float, high_threshold: float, in_distribution: bool) -> str:
    if not in_distribution:
        return "indeterminate"
    if malignancy >= max(high_threshold, threshold):
        return "high"
    if malignancy >= threshold:
        return "moderate"
    return "low"
