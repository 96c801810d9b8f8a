"""Kynamo: a DynamoDB-compatible database that runs on Kubernetes."""

__version__ = "0.1.0"
