"""Library warnings inside the metrics, said once and in our words (score.metrics).

numpy and scipy warn about nearly constant inputs and poorly conditioned fits in their own
terms, once per call deep inside a bootstrap; the metrics collect them (`Caught`) and say
each distinct one once as a `MetricsWarning`, which `eval`'s note collector prints.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Sequence

from w2s_vqa.tables import TableWarning


class MetricsWarning(TableWarning):
    """A figure computed, with a caveat said in our words: a library's warning (a nearly
    constant input, a poorly conditioned fit) or a figure left out on a small set."""


# Library warnings in our words, by category name; any other says its category and message.
_SAID = {
    "NearConstantInputWarning": "the scores or the MOS are nearly constant (their differences are near float "
                                "precision), so the correlations are unreliable",
    "ConstantInputWarning": "the scores or the MOS are constant, so the correlations are undefined",
    "RankWarning": "the scores are nearly constant, so the fallback line from scores to MOS is poorly "
                   "conditioned",
    "OptimizeWarning": "the logistic fit's parameter covariance could not be estimated (the fit itself stands)",
}


class Caught:
    """Collects every warning raised inside (numpy's, scipy's, ours from inner calls) as
    distinct sentences in our words, in order: `.said`."""

    def __enter__(self) -> "Caught":
        self._context = warnings.catch_warnings(record=True)
        self._records = self._context.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)
        self.said: list[str] = []
        for record in self._records:
            name = record.category.__name__
            if issubclass(record.category, MetricsWarning):
                sentences = str(record.message).split("; ")
            elif name in _SAID:
                sentences = [_SAID[name]]
            else:
                sentences = [f"{name} from {record.filename.rsplit('/', 1)[-1]}: "
                             f"{' '.join(str(record.message).split())}"]
            self.said += [s for s in sentences if s not in self.said]


def say(said: Sequence[str], what: str = "") -> None:
    """One MetricsWarning holding every sentence of `said` (none when empty)."""
    if said:
        warnings.warn(f"{what + ': ' if what else ''}{'; '.join(said)}", MetricsWarning, stacklevel=3)


def speaks_once(function: Callable) -> Callable:
    """Library warnings inside `function` said once, in our words (a MetricsWarning)."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with Caught() as caught:
            result = function(*args, **kwargs)
        say(caught.said)
        return result

    return wrapped
