"""What a comparison leaves behind: `summary.json`/`summary.csv` (`summary`), TensorBoard's
HParams (`hparams`), and `report.md` (`report`) with its figures (`plots`)."""
