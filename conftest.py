"""pytest set-up shared by the unit tests and nbval over the book's notebooks."""
import copy
import os

from nbval.plugin import IPyNbCell

from feasible.checks import outputs_agree

# A kernel that inherits MPLBACKEND=agg draws no inline figures: let notebooks use the inline backend.
os.environ.pop("MPLBACKEND", None)


def pytest_collectstart(collector):
    # nbval compares text outputs; figures and library chatter are not regression targets.
    if getattr(collector, "fspath", None) is not None and collector.fspath.ext == ".ipynb":
        collector.skip_compare += (
            "image/svg+xml",
            "text/html",
            "stderr",
            "application/papermill.record/text/plain",
        )


def _texts(output):
    """The (container, key) pairs of an output that hold comparable text."""
    if output.get("output_type") == "stream":
        return [(output, "text")]
    return [(output["data"], key) for key in output.get("data", {}) if key == "text/plain"]


_exact_compare = IPyNbCell.compare_outputs


def _compare_within_tolerance(self, test, ref, skip_compare=None):
    """nbval's comparison, except that ``value ± tolerance`` numbers may differ within tolerance.

    A re-executed output that agrees with the committed one in the sense of
    ``feasible.checks.outputs_agree`` is replaced by the committed text before nbval's exact
    comparison; anything else is compared exactly, as nbval does (see feasible/checks.py).
    """
    if _exact_compare(self, test, ref, skip_compare):
        return True
    aligned, notes = copy.deepcopy(test), []
    for new, old in zip(aligned, ref):
        if new.get("output_type") != old.get("output_type") or new.get("name") != old.get("name"):
            continue
        for (new_box, key), (old_box, old_key) in zip(_texts(new), _texts(old)):
            if key != old_key or new_box[key] == old_box[key]:
                continue
            problem = outputs_agree(self.sanitize(old_box[key]), self.sanitize(new_box[key]))
            if problem is None:
                new_box[key] = old_box[key]
            else:
                notes.append(problem)
    if _exact_compare(self, aligned, ref, skip_compare):
        return True
    self.comparison_traceback += [f"(tolerant comparison: {note})" for note in notes]
    return False


IPyNbCell.compare_outputs = _compare_within_tolerance
