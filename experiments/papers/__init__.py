"""What each paper asks and how it is judged: the named presets (`presets`), their
replications' checks and verdicts (`replications`), and the architectures the built-in
mlp and cnn do not express (`architectures`)."""
