"""Dead letters: read ``fiscal.dlq``, filter, show, count, and replay them into the pipeline.

``fiscalflow dlq`` (cli.py) is the operator's entry point; reading (reader.py), selecting
(filters.py) and replaying (replay.py) know nothing about the terminal.
"""
