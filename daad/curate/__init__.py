"""Curation in the FiftyOne App: open records as a FiftyOne dataset, sync decisions back.

``session`` starts (and stops, by PID) the database and App processes; ``dataset`` fills
FiftyOne datasets from registry records or generated shards; ``sync`` turns the
curators' tags and edits into manifest changes; ``app`` serves the App.
"""
