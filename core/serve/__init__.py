"""The serve floor: many students, one server (job manager, runner table, scheduler, co-batching, workers, store, budget, identity)."""
