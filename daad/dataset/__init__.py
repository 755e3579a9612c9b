"""The registry as a Hugging Face dataset folder: the build (``daad build``), its rows, shards,
features and card, plots of its counts, and exports of generated datasets to other tools' layouts."""
