"""The whole plugin contract. Each hook receives ``register(name, cls)``; core validates the call."""
from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("harness")
hookimpl = HookimplMarker("harness")


@hookspec
def register_encoders(register):
    """Register Encoder subclasses: ``register("name", EncoderClass)``."""


@hookspec
def register_datasets(register):
    """Register Dataset subclasses: ``register("name", DatasetClass)``."""


@hookspec
def register_tasks(register):
    """Register Task subclasses: ``register("name", TaskClass)``."""


@hookspec
def register_reports(register):
    """Register Report subclasses: ``register("name", ReportClass)``."""
