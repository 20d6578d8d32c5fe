"""Where vmem finds what it ships (the Streamlit app, the sample data) and where it keeps the default memory.

Two installs look different on disk:
- a checkout (`pip install -e .` or the repository on `sys.path`): `app.py`, `pages/` and `data/` sit beside the
  `vmem_core/` folder, and the sample memory is `sample.vmem/` in the checkout, as the README has always said;
- a wheel (`pip install vmem`, `pipx`, a Docker image): pyproject.toml maps `app.py` + `pages/` to `vmem_core/app/`
  and `data/` to `vmem_core/sample_data/`, and the sample memory goes to the user's data folder (never into
  site-packages, which may be read-only and is replaced on every upgrade).
`$VMEM_HOME` overrides where the default memory goes in both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MEMORY_NAME = "sample.vmem"


def checkout_root() -> Optional[Path]:
    """The repository folder when vmem runs from a checkout, else None (an installed wheel)."""
    root = PACKAGE_DIR.parent
    is_checkout = (root / "app.py").is_file() and (root / "pages").is_dir() and (root / "pyproject.toml").is_file()
    return root if is_checkout else None


def app_dir() -> Path:
    """The folder holding the Streamlit entry point `app.py` and its `pages/`."""
    root = checkout_root()
    return root if root is not None else PACKAGE_DIR / "app"


def app_script() -> Path:
    return app_dir() / "app.py"


def data_dir() -> Path:
    """The shipped data: `fashion-mnist/{memory,queries,taxonomy.csv}` and `ood/` photos."""
    root = checkout_root()
    return root / "data" if root is not None else PACKAGE_DIR / "sample_data"


def sample_data() -> Path:
    """The shipped Fashion-MNIST sample: `memory/<label>/*.png`, `queries/<label>/*.png`, `taxonomy.csv`."""
    return data_dir() / "fashion-mnist"


def ood_dir() -> Path:
    """Photos of things the sample memory has never seen (scikit-image's samples)."""
    return data_dir() / "ood"


def home() -> Path:
    """Where vmem keeps memories it makes on its own: $VMEM_HOME, else the checkout, else the user's data folder
    (~/.local/share/vmem on Linux, ~/Library/Application Support/vmem on macOS, %LOCALAPPDATA%\\vmem on Windows)."""
    if os.environ.get("VMEM_HOME"):
        return Path(os.environ["VMEM_HOME"]).expanduser()
    root = checkout_root()
    if root is not None:
        return root
    from platformdirs import user_data_path

    return user_data_path("vmem", appauthor=False)


def default_memory() -> Path:
    """The sample memory that `vmem demo` and `vmem app` build and open when no memory is named."""
    return home() / DEFAULT_MEMORY_NAME
