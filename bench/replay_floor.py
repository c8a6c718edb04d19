"""The floor under bench_replay.py: a Streamlit page with ``?charts=N`` trivial Plotly charts and nothing else.

What a fresh browser pays on this machine before any of the app's own work: Streamlit's page, its websocket,
and its Plotly element (a 4.7 MB script chunk, fetched and evaluated on first use)."""
import plotly.graph_objects as go
import streamlit as st

st.title("Floor")
for i in range(min(int(st.query_params.get("charts", 0)), 8)):
    st.plotly_chart(go.Figure(go.Scatter(y=[1, 3, 2])), key=f"floor_{i}")
