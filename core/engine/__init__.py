"""The engine floor: one run of N lanes (config, events, data, models, probes, the loop). No run store, queue, Optuna or lesson text."""
