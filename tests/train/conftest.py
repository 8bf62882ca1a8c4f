"""Training tests send themselves SIGINT as Ctrl-C would. A shell starts background jobs with SIGINT ignored
(and the engine rightly leaves an ignored SIGINT alone), so the tests put Python's own handler back, as an
interactive run has it."""

import signal

import pytest


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
