"""`attnbench accuracy`: a tiny transformer per variant trained on small real tasks, into CSV.

    cfg = harness.config.load(AccuracyConfig, "accuracy", profile="quick")  # harness.accuracy.config
    df = harness.accuracy.runner.run(cfg)  # pandas.DataFrame, also <out>/<run_id>/accuracy.csv

config.py holds the settings, model.py the tiny transformer, tasks/ the tasks, runner.py the
run, view.py what the console shows.
"""
