"""run_tool(die_with_parent=True) sets Linux PDEATHSIG=SIGKILL in the child, and only then."""

from __future__ import annotations

import signal
import sys

import pytest

from deploy_to_ollama._subprocess import run_tool

# The child asks the kernel for its own parent-death signal (PR_GET_PDEATHSIG = 2).
_READ_PDEATHSIG = (
    "import ctypes; v = ctypes.c_int(); "
    "ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(v)); print(v.value)"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG is Linux-only")
@pytest.mark.parametrize(("die", "expected"), [(True, int(signal.SIGKILL)), (False, 0)])
def test_die_with_parent_sets_pdeathsig(*, die: bool, expected: int) -> None:
    result = run_tool([sys.executable, "-c", _READ_PDEATHSIG], what="probe", die_with_parent=die)
    assert int(result.stdout.strip()) == expected
