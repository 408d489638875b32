"""``dpo-operator report``: one self-contained HTML page about a DPOTrainingJob or DPOCollection (status figures,
training curves, the dataset summary), to open in a browser or attach to a review. ``sources`` gathers, ``page``
renders."""
