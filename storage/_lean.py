"""sqlite-utils without pandas: imported before sqlite_utils is, by storage and actors.

sqlite-utils imports pandas whenever it is installed (only to map pandas.Timestamp to TEXT in
inserts, which this service never makes), and pandas is installed for exchange-calendars. That
import alone is about 40 MB of resident memory in a service whose whole budget on a Pi is 100 MB.
A None in sys.modules makes sqlite-utils' `import_module("pandas")` raise ImportError, so it
takes its no-pandas path; pandas stays importable for anything else afterwards.
"""

from __future__ import annotations

import sys

if "sqlite_utils" not in sys.modules and "pandas" not in sys.modules:
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]
