"""Installed price tables (`fleet-hub prices install`): where they live, how they are checked
and laid over the shipped ones, and the all-or-nothing install. See `pricing._installed`."""

from pricing._install import Installed, install_table
from pricing._installed import (
    PRICES_ENV,
    RateChange,
    check_installed,
    installed_files,
    installed_state,
    overlay,
    prices_dir,
    read_installed,
)

__all__ = [
    "PRICES_ENV",
    "Installed",
    "RateChange",
    "check_installed",
    "install_table",
    "installed_files",
    "installed_state",
    "overlay",
    "prices_dir",
    "read_installed",
]
