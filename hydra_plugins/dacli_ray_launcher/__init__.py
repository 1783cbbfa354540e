"""dacli's Hydra launcher on Ray (`hydra/launcher=ray`): each sweep job is a Ray task that asks for its
job's GPUs, so Ray runs jobs side by side on disjoint devices, on one node or on a Ray cluster.

Hydra finds launchers by importing every module under the `hydra_plugins` namespace package, so this
package and its config module import nothing heavy; Ray is imported only when a sweep is launched
(`_core.py`, whose leading underscore keeps Hydra's scan from importing it)."""
