"""Web app and REST API (FastAPI + uvicorn) over the PyTorch-free inference engine."""
