"""The Parquet report schemas (``videos.json``, ``frames.json``, ``experiment.json``),
shipped as package data so an installed reelsr can write and read its reports."""
