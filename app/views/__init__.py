"""Floor 4, Streamlit, read-only: job key -> drawn parts (run, grid, comparison, data, library, the shared job parts)."""
