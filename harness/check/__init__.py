"""`attnbench check`: the CI performance regression check against a committed baseline.

ratios.py holds the settings and the time check (each variant timed against mha interleaved),
baseline.py the committed baseline of ratios, view.py the console and the verdict;
instructions.py the instruction-count check under callgrind, instructions_child.py the process
valgrind runs, instructions_view.py its baseline, verdict and table.
"""
