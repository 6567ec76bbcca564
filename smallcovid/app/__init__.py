"""Streamlit-free helpers that the app's pages call: overlays, tables, uploads,
public-mode policy, model catalog and run views. Nothing here imports Streamlit."""
