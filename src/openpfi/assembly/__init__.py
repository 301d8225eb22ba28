"""Builders every engine shares: from a config to clients, server, monitor and a started run folder.

The layer sits below the engines and above strategies / client / monitor, so the in-process
engine and the Flower apps build the same objects from the same code, and the recipes
(start / resume a job) sit above the engines.
"""
