"""The data a comparison trains on: `datasets` (Shapeset, `.npz` files, `keras.datasets`,
arrays passed from Python) and the Shapeset-3x2 synthesizer (`shapeset`)."""
