"""Transcription jobs: the records on the shared disk (store.py), running them across replicas
(runner.py), and their callbacks (callbacks.py)."""
