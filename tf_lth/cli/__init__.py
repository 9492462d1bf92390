"""Command-line programs: flags -> Config -> experiment -> export (docs/architecture.md).
`python -m tf_lth.train` and the other commands start here."""
