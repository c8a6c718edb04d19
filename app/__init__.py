"""Streamlit building blocks of Gradient Lab: config widgets, figure builders, the live job view."""
