"""Floor 2, pure: events -> tables and records (run views, grids, comparisons, the library, job states). No Streamlit."""
