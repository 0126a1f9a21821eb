"""Session files for the field's tools: NWB (``bcirig export nwb``) and suite2p's output layout (``bcirig export
suite2p``). Both read a session file and write new files; neither changes the session file."""

from pathlib import Path
from typing import Any

from bcirig.export.common import ExportError, SessionData, load_session_data
from bcirig.export.suite2p import export_suite2p

__all__ = ["ExportError", "SessionData", "export_nwb", "export_suite2p", "load_session_data"]


def export_nwb(*args: Any, **kwargs: Any) -> Path:
    """See :func:`bcirig.export.nwb.export_nwb` (imported on use: pynwb is an optional extra)."""
    from bcirig.export.nwb import export_nwb as run

    return run(*args, **kwargs)
