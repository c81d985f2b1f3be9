"""pytest set-up shared by the unit tests and nbval over the book's notebooks."""
import os

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
