"""Gradient Lab's lesson kit, one floor per stage of the data flow (each imports only from floors below):
text (plain text, dataset names, formats) < records (events -> tables) < figures (-> Plotly) <
views (Streamlit, read-only) < forms (Streamlit, widgets -> configs). See docs/ARCHITECTURE.md."""
