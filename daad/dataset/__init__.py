"""The built dataset: what ``daad build`` writes and how it is published."""
