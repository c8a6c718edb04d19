"""The lab floor: experiments made of runs, each a task config and the function that runs it (grid, compare, surface, race, gradient check, sweep)."""
