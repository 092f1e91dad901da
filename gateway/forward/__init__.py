"""Forwarding: rules that route received instances to other archives, with a durable queue per destination."""
