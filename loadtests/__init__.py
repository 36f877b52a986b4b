"""Locust load tests against the public HTTP API (`make loadtest`).

They speak only HTTP to a running `make run` (or any base URL), one scenario per flow; each
later area adds its flow to `locustfile.py`.
"""
