"""Plumbing every service shares: the gRPC server, its RPC metrics, and shutdown."""
