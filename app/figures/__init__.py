"""Floor 3, pure: records -> Plotly figures (plain specs, built without validation). No Streamlit."""
