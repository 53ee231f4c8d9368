"""Datasets: the offline synthetic shapes world and the LLaVA-format records built from it."""
