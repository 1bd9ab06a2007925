"""A toy encoder that stalls at a chosen batch, for tests that stop a run midway (signals, a killed rank).

Environment, not options (a rerun must keep the encoder's identity): ``SLOW_MARK_AT`` is the batch number
(counted per process, 1-based) at which it writes ``SLOW_MARKER`` (with ``.<RANK>`` appended under torchrun)
and then sleeps 30 s."""
import os
import sys
import time
from pathlib import Path

from harness.api import hookimpl

sys.path.insert(0, str(Path(__file__).parent))  # it extends toy.ToyStats, beside it
from toy import ToyStats  # noqa: E402


class SlowStats(ToyStats):
    """ToyStats that announces its n-th batch and then takes its time."""

    def forward(self, x, reps):
        if type(self).batches + 1 == int(os.environ.get("SLOW_MARK_AT", "0")):  # ToyStats counts the batches
            marker = os.environ["SLOW_MARKER"] + (f".{os.environ['RANK']}" if "RANK" in os.environ else "")
            Path(marker).write_text("started")
            time.sleep(30)
        return super().forward(x, reps)


@hookimpl
def register_encoders(register):
    register("slow_stats", SlowStats)
