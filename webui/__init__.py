"""The Gradio app's pieces that are not wiring: rendering, settings, live index, ingestion tab, deployment.

``app.py`` imports these and builds the UI. Everything here except ``ingest_tab.build_ingest_tab``
works without Gradio, so it is tested as plain Python.
"""
