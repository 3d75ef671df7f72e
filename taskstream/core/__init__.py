"""Code shared by the web and worker processes.

Nothing here imports FastAPI or the arq worker loop: both processes (and the client's
tests) can import it without pulling in the other side's dependencies.
"""
