"""Deterministic simulation of Paxos groups and a linearizability checker for its histories."""
