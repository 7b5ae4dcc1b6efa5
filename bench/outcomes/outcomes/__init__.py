"""Does aios pay off on real data? A year of a road-side device's low-cost sensors against a
reference analyzer (``bench/outcomes/data``): the data, the scoring of an approach's alerts
against the reference, and the baselines a city runs without aios."""
