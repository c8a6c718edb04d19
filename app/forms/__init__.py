"""Floor 5, Streamlit, writes: widgets -> RunConfig / GridConfig / ComparisonConfig, with URL sync."""
