"""Pulso executive view: a Streamlit app over the published data (see docs/data-contract.md §3)."""
