"""`attnbench check`: the CI performance regression check against a committed baseline.

ratios.py holds the settings and the time check (each variant timed against mha interleaved),
baseline.py the committed baseline of ratios, view.py the console and the verdict;
against.py which reference a check compares with (this machine model's figures, or a commit
measured here), sidebyside.py two commits timed side by side in child processes;
instructions.py the instruction-count check under callgrind, instructions_child.py the process
valgrind runs, instructions_view.py its baseline, verdict and table.
"""
