"""The application: the `mixrl` command line, the quickstart, evaluation reports, and making datasets.

Modules: `mixrl.cli` (the console script), `mixrl.quickstart`, `mixrl.evaluate` (`mixrl eval`), `mixrl.config`
(the schemas of eval and quickstart recipes), `mixrl.data` (synthetic task generators, certified by the reward
checkers). It may import every package below it; nothing in the project imports it.
"""
