"""Risk levels from the malignancy score. The rules, in order:

1. indeterminate: the image failed the out-of-distribution gate; no assessment is given.
2. high: malignancy score >= the card's `high_risk` threshold (chosen on validation for
   specificity >= 0.95, never below the operating threshold).
3. moderate: operating threshold <= score < high_risk.
4. low: score < the operating threshold (chosen on validation: the highest score whose sensitivity has a
   lesion-bootstrap 95 % interval with its lower end >= 0.90; card threshold_rules.malignant).

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

# What to do about an image that is not assessed, by its reason's code: the advice a user reads under the reasons
# must not contradict them (a dermoscopic image that is only too small is not told it does not look dermoscopic).
NOT_ASSESSED_ADVICE = {  # first match in this order decides: the more basic problem first (a grey picture is
    # also refused by the image-type check, which knows only colour)
    "composite_image": "No assessment is given. Send the dermoscopic image file itself, not a screenshot, a page "
                       "or several pictures put together: one lesion per picture.",
    "greyscale": "No assessment is given. Send the colour original of the dermoscopic image.",
    "not_dermoscopic": "No assessment is given: dermalens reads only dermoscopic images, taken through a "
                       "dermatoscope. If the lesion worries you, have a clinician look at it.",
    "too_small": "No assessment is given. Send the original dermoscopic image, not a thumbnail or a reduced copy.",
    "too_dark": "No assessment is given. Send a dermoscopic image that is evenly lit and not under-exposed.",
    "too_bright": "No assessment is given. Send a dermoscopic image that is evenly lit and not over-exposed.",
    "blank": "No assessment is given: the picture shows almost nothing. Send a dermoscopic image centred on the lesion.",
    "unlike_training": "No assessment is given: the image differs from every dermoscopic image the model learned from, "
                       "so its answer would not be reliable. If the lesion worries you, have a dermatologist look at it.",
}


def recommendation(level: str, reason_codes=()) -> str:
    """The advice shown with a risk level; for an image not assessed, the advice for its most basic reason."""
    if level == "indeterminate":
        for code in NOT_ASSESSED_ADVICE:
            if code in reason_codes:
                return NOT_ASSESSED_ADVICE[code]
    return RECOMMENDATIONS[level]


COLOURS = {"low": "#2e7d32", "moderate": "#ef6c00", "high": "#c62828", "indeterminate": "#616161"}


def risk_level(malignancy: float, threshold: float, high_threshold: float, in_distribution: bool) -> str:
    if not in_distribution:
        return "indeterminate"
    if malignancy >= max(high_threshold, threshold):
        return "high"
    if malignancy >= threshold:
        return "moderate"
    return "low"
