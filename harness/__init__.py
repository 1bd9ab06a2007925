"""partbench: how part-aware and object-aware are frozen vision encoders?"""
from .api import (REQUIRED, Dataset, Encoder, HarnessError, Option, Samples, SpecError, Task,
                  file_sha256)
from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Dataset", "Encoder", "HarnessError", "Option", "REQUIRED", "Samples", "SpecError", "Task",
           "file_sha256", "hookimpl", "__version__"]
