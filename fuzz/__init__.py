"""Robustness tooling beside the code, as h11 keeps ``fuzz/``.

* :mod:`fuzz.frames`: valid provider frames recorded from the simulators,
  and the ways of damaging them (truncation, bit flips, type confusion).
* :mod:`fuzz.fuzz_protocols`: long fuzzing runs of the provider protocols
  (``python -m fuzz.fuzz_protocols``).
* :mod:`fuzz.matrix`: one fault of the fault proxy against one provider
  session, measured.
* :mod:`fuzz.fault_matrix`: the whole matrix in real time, as a table
  (``python -m fuzz.fault_matrix``).

The test suite uses :mod:`fuzz.frames` and :mod:`fuzz.matrix` in its
Hypothesis and fault-matrix tests, sized to seconds.
"""
