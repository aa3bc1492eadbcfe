"""`attnbench generate`: each attention variant inside a small decoder that generates greedily.

decoder.py  the model (RMSNorm, the variant's attention, SwiGLU; tied embedding and head)
loop.py     prefill then greedy decode with per-layer KV caches, timed token by token
share.py    attention's share of a decode step, timed around the attention calls
cell.py     one variant x context measured into a row
run.py      the config, the run folder (generate.csv, run.json), speedups over the reference
"""
