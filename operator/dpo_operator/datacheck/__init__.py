"""The data check run before any GPU is requested: figures about a preference dataset (``figures``), the verdict
of the spec's thresholds (``verdict``), and the data card and histogram written next to the data (``card``)."""
